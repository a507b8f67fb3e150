"""The validation loss: the training loss (same prompts, same loss on the answer tokens), without gradients, in
eval mode, over every item of the `validation:` datasets, after each epoch (docs/training.md).

Each item is read with torch's RNG seeded by (run.seed, source, index) and gets that seed for its prompt draw, so
every epoch sees the same prompts and, with a random image transform, the same crops: the epochs' validation
losses differ only because the weights do. Each process evaluates the whole set (validation sets are small; with
run.sharding=fsdp every process must run the same forwards), so the figure is the same on every rank."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skingpt4.common.precision import DTYPES, autocast
from skingpt4.runners.data import Source, derive_seed
from skingpt4.runners.distributed import to_device


class SeededItems(Dataset):
    def __init__(self, source: Source, seed: int):
        self.source, self.seed = source, seed

    def __len__(self) -> int:
        return len(self.source.dataset)

    def __getitem__(self, index: int):
        seed = derive_seed(self.seed, "validation", self.source.name, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            item = self.source.dataset[index]
        return None if item is None else dict(item, item_seed=seed, source=self.source.name)


class Validation:
    def __init__(self, sources: Sequence[Source], collate: Callable, batch_size: int, seed: int, num_workers: int = 0):
        self.sources, self.collate = list(sources), collate
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers

    @property
    def size(self) -> int:
        return sum(len(s.dataset) for s in self.sources)

    def run(self, model: nn.Module, train_step: Callable[[nn.Module, dict], dict], device: torch.device,
            precision: str) -> dict[str, Any]:
        """-> {"val_loss": item-weighted mean over every source, "val_loss_by_source": {name: mean},
        "val_items": items used}; items with bad images are skipped (counted by their dataset)."""
        was_training = model.training
        model.eval()
        by_source, total, items = {}, 0.0, 0
        try:
            with torch.no_grad(), autocast(device, DTYPES[precision]):
                for source in self.sources:
                    loader = DataLoader(SeededItems(source, self.seed), batch_size=self.batch_size, shuffle=False,
                                        collate_fn=self.collate, num_workers=self.num_workers)
                    loss_sum, count = 0.0, 0
                    with torch.random.fork_rng(devices=[]):  # the DataLoader's base seed must not move training's RNG
                        for batch in loader:
                            if batch is None:  # only bad images
                                continue
                            size = len(batch["text_input"])
                            loss = train_step(model, to_device(batch, device))["loss"]
                            loss_sum += float(loss.detach().float()) * size
                            count += size
                    by_source[source.name] = loss_sum / count if count else math.nan
                    total, items = total + loss_sum, items + count
        finally:
            model.train(was_training)
        return {"val_loss": total / items if items else math.nan, "val_loss_by_source": by_source, "val_items": items}
