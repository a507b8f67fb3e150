"""Which samples go into which batch: a deterministic plan, so runs are reproducible and resumable.

Sources (from `build_datasets`) are mixed by `sample_ratio`: each micro-batch comes from one source, drawn
with probability proportional to its ratio (as MiniGPT-4 does). Every source is an endless stream:
pass p over it is a fresh permutation seeded by (seed, source, p). Micro-step m takes the next
`batch_size * world_size` stream positions of its source; rank r gets the r-th slice of them. Each item
carries its own seed (from seed, source and stream position), used for its random augmentation, so:
  - the data of step N is a pure function of (seed, N), whatever the number of workers;
  - resuming at step N starts the loader exactly at step N, without reading the skipped samples;
  - k processes with batch b see the same global batch as one process with batch k*b.
Map-style datasets only: a streaming source (IterableDataset) has no index to plan with.
"""
from __future__ import annotations

import hashlib
import signal
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from skingpt4.common.config import ConfigError

ItemKey = tuple[int, int, int]  # (source number, index in that dataset, item seed)


@dataclass
class Source:
    name: str
    dataset: Dataset
    ratio: float


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of values (stable across processes and Python runs, unlike hash())."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def as_sources(built: Sequence[tuple[str, Dataset, float]]) -> list[Source]:
    sources = []
    for name, dataset, ratio in built:
        if isinstance(dataset, IterableDataset):
            raise ConfigError(
                f"datasets.{name}: a stream (webdataset shards) cannot be used for training, which needs indexable "
                "datasets to plan a reproducible, resumable order; train on the prepared folder (filter_cap.json + "
                "image/) with the image_text_pairs builder instead"
            )
        if len(dataset) == 0:
            raise ConfigError(f"dataset '{name}' is empty: check its paths in the datasets section of the config")
        if not ratio > 0:
            raise ConfigError(f"dataset '{name}': sample_ratio must be > 0, got {ratio}")
        sources.append(Source(name, dataset, float(ratio)))
    if not sources:
        raise ConfigError("no training dataset: the config's datasets section is empty")
    return sources


class BatchPlan:
    """The keys of every rank's micro-batch for micro-steps 0..total_micro_steps-1."""

    def __init__(self, sources: Sequence[Source], batch_size: int, world_size: int, rank: int, seed: int,
                 total_micro_steps: int):
        self.sizes = [len(s.dataset) for s in sources]
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        self.total_micro_steps = total_micro_steps
        ratios = torch.tensor([s.ratio for s in sources], dtype=torch.float64)
        if len(sources) == 1:
            self.choices = torch.zeros(total_micro_steps, dtype=torch.long)
        else:
            generator = torch.Generator().manual_seed(derive_seed(seed, "sources"))
            self.choices = torch.multinomial(ratios, total_micro_steps, replacement=True, generator=generator)
        # How many earlier micro-steps drew the same source: the stream offset of each micro-step.
        one_hot = torch.nn.functional.one_hot(self.choices, len(sources))
        self.draws_before = (one_hot.cumsum(0) - one_hot).gather(1, self.choices[:, None]).squeeze(1)
        self._perm_cache: dict[int, tuple[int, torch.Tensor]] = {}

    def _permutation(self, source: int, epoch_of_stream: int) -> torch.Tensor:
        cached = self._perm_cache.get(source)
        if cached is None or cached[0] != epoch_of_stream:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", source, epoch_of_stream))
            cached = (epoch_of_stream, torch.randperm(self.sizes[source], generator=generator))
            self._perm_cache[source] = cached
        return cached[1]

    def keys(self, micro_step: int) -> list[ItemKey]:
        source = int(self.choices[micro_step])
        global_batch = self.batch_size * self.world_size
        start = int(self.draws_before[micro_step]) * global_batch + self.rank * self.batch_size
        keys = []
        for position in range(start, start + self.batch_size):
            stream_pass, offset = divmod(position, self.sizes[source])
            index = int(self._permutation(source, stream_pass)[offset])
            keys.append((source, index, derive_seed(self.seed, "item", source, position)))
        return keys


class PlannedBatchSampler(Sampler[list[ItemKey]]):
    def __init__(self, plan: BatchPlan, start_micro_step: int):
        self.plan, self.start = plan, start_micro_step

    def __iter__(self) -> Iterator[list[ItemKey]]:
        for micro_step in range(self.start, self.plan.total_micro_steps):
            yield self.plan.keys(micro_step)

    def __len__(self) -> int:
        return self.plan.total_micro_steps - self.start


class PlannedItems(Dataset):
    """Reads item `index` of source `source` with torch's RNG seeded by the item's own seed (restored
    afterwards), so random augmentation depends on the item, not on the worker or process that reads it."""

    def __init__(self, sources: Sequence[Source]):
        self.sources = list(sources)

    def __len__(self) -> int:
        return sum(len(s.dataset) for s in self.sources)

    def __getitem__(self, key: ItemKey):
        source, index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            item = self.sources[source].dataset[index]
        if item is not None:
            item = dict(item, item_seed=seed, source=self.sources[source].name)
        return item


class CountingCollate:
    """Wraps the task's collate: records how many items were bad (None) in the batch."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, items: list):
        bad = sum(item is None for item in items)
        return {"batch": self.collate(items), "bad_items": bad, "size": len(items)}


def _ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes its step, saves and shuts them down
    (a terminal's Ctrl-C reaches the whole process group; a worker dying first would break that step)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_train_loader(sources: Sequence[Source], collate: Callable, *, batch_size: int, world_size: int, rank: int,
                       seed: int, total_micro_steps: int, start_micro_step: int, num_workers: int,
                       pin_memory: bool) -> DataLoader:
    plan = BatchPlan(sources, batch_size, world_size, rank, seed, total_micro_steps)
    return DataLoader(
        PlannedItems(sources),
        batch_sampler=PlannedBatchSampler(plan, start_micro_step),
        collate_fn=CountingCollate(collate),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if num_workers > 0 else None,
        worker_init_fn=_ignore_interrupts if num_workers > 0 else None,
    )
