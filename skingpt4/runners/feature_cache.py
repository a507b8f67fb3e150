"""Frozen-feature cache (`run.cache_frozen_features: true`, docs/training.md): the ViT + Q-Former outputs of an
image do not change during training when the image transform is deterministic (the eval transform). Each image is
then encoded once before training and the runner feeds `samples["queries"]` instead of pixels."""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from skingpt4.common.config import ConfigError
from skingpt4.runners.data import Source
from skingpt4.runners.distributed import DistInfo

log = logging.getLogger("skingpt4.train")


class CachedQueries(Dataset):
    """A dataset whose items carry precomputed `queries` [32, 768] instead of `image`."""

    def __init__(self, items: list[Optional[dict]], bad: Any = None):
        self.items = items
        self.bad = bad  # the bad-sample counter of the dataset the items were read from

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Optional[dict]:
        item = self.items[index]
        return None if item is None else dict(item)


def _uses_eval_transform(dataset: Any) -> bool:
    from skingpt4.processors import Blip2ImageEvalProcessor

    return isinstance(getattr(dataset, "vis_processor", None), Blip2ImageEvalProcessor)


@torch.no_grad()
def cache_queries(model: nn.Module, source: Source, batch_size: int, dist: DistInfo) -> CachedQueries:
    """Encode every image of `source` once (in index order, deterministic transform) and keep the Q-Former
    outputs on the CPU with the rest of each item. Each process builds its own copy."""
    if isinstance(source.dataset, IterableDataset):
        raise ConfigError(f"run.cache_frozen_features needs indexable datasets, but '{source.name}' is a stream "
                          "(webdataset shards) that is never read to its end; turn the cache off or train on the "
                          "prepared folder")
    if not _uses_eval_transform(source.dataset):
        raise ConfigError(
            f"run.cache_frozen_features needs the deterministic eval image transform, but dataset '{source.name}' "
            f"uses {type(getattr(source.dataset, 'vis_processor', None)).__name__}; set "
            f"datasets.{source.name}.vis_processor.name to blip2_image_eval or turn the cache off")
    started = time.perf_counter()
    loader = DataLoader(source.dataset, batch_size=max(batch_size, 8), shuffle=False, collate_fn=lambda items: items,
                        num_workers=0)
    items: list[Optional[dict]] = []
    for raw in loader:
        good = [item for item in raw if item is not None]
        queries = model.encode_queries(torch.stack([item["image"] for item in good])).cpu() if good else None
        it = iter(range(len(good)))
        for item in raw:
            if item is None:
                items.append(None)
                continue
            row = {k: v for k, v in item.items() if k != "image"}
            row["queries"] = queries[next(it)]
            items.append(row)
    if dist.is_main:
        log.info("cached frozen features of '%s': %d items in %.1fs", source.name, len(items),
                 time.perf_counter() - started)
    return CachedQueries(items, getattr(source.dataset, "bad", None))
