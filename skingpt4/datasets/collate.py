"""Batching for the runner (docs/architecture.md, "Data samples")."""
from __future__ import annotations

from typing import Any, Optional

import torch


def collate(batch: list[Optional[dict[str, Any]]]) -> Optional[dict[str, Any]]:
    """Drop the None items (bad images, already counted by their dataset); None if nothing is left.

    Tensors of equal shape are stacked; every other field becomes a list, with None where an item lacks it
    (sources mixed in one batch may carry different metadata).
    """
    items = [item for item in batch if item is not None]
    if not items:
        return None
    keys = list(dict.fromkeys(key for item in items for key in item))
    out: dict[str, Any] = {}
    for key in keys:
        values = [item.get(key) for item in items]
        if all(isinstance(v, torch.Tensor) for v in values) and len({v.shape for v in values}) == 1:
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
