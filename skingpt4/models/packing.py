"""Packed training batches (`run.pack_sequences`, docs/performance.md): the samples of a micro-batch laid end to end
in a few rows instead of one right-padded row each, so the LLM runs (almost) no padding positions.

Each sample keeps its own positions (0, 1, 2, ... restart at every sample), and attention stays inside a sample:
transformers reads the sample boundaries from the restarts of `position_ids` when no attention mask is given and
builds a block-causal mask (sdpa, eager) or runs variable-length kernels (flash_attention_2). A sample's first
label is -100 (its BOS), so no loss crosses a boundary; the loss is the mean over the same answer tokens as the
padded batch's, equal to rounding (tests/test_perf_paths.py).
"""
from __future__ import annotations

from typing import Sequence

import torch


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Sample indices per row: as few rows as hold the samples within `capacity` positions each, filled evenly
    (longest first, each onto the emptiest row), so the rows' right padding is small. A sample longer than
    `capacity` gets a row of its own. Deterministic: equal lengths keep their index order."""
    if capacity < 1:
        raise ValueError(f"pack capacity must be >= 1, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    fitting = [i for i in order if lengths[i] <= capacity]
    alone = [[i] for i in order if lengths[i] > capacity]
    count = max(1, -(-sum(lengths[i] for i in fitting) // capacity)) if fitting else 0
    while fitting:
        rows: list[list[int]] = [[] for _ in range(count)]
        used = [0] * count
        for index in fitting:
            row = min(range(count), key=lambda r: (used[r], r))
            rows[row].append(index)
            used[row] += lengths[index]
        if max(used) <= capacity:
            return alone + [row for row in rows if row]
        count += 1
    return alone


def packed_position_ids(rows: Sequence[Sequence[int]], lengths: Sequence[int]) -> torch.Tensor:
    """[R, T] positions restarting at 0 for every sample of a row; the right padding of a row counts as one more
    sample of its own (0, 1, ...), so real positions never attend to it."""
    width = max(sum(lengths[i] for i in row) for row in rows)
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        parts = [torch.arange(lengths[i]) for i in row]
        used = sum(lengths[i] for i in row)
        if used < width:
            parts.append(torch.arange(width - used))
        out[r] = torch.cat(parts)
    return out


def padding_fraction(lengths: Sequence[int], rows: Sequence[Sequence[int]]) -> float:
    """Share of the positions of the batch that are padding, for a layout with `rows` (one sample a row: padded)."""
    width = max(sum(lengths[i] for i in row) for row in rows)
    return 1.0 - sum(lengths) / (width * len(rows))
