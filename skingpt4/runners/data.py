"""Which samples go into which batch: a deterministic plan, so runs are reproducible and resumable.

Sources (from `build_datasets`) are mixed by `sample_ratio`: each micro-batch comes from one source, drawn
with probability proportional to its ratio (as MiniGPT-4 does). Every map-style source is an endless stream:
pass p over it is a fresh permutation seeded by (seed, source, p). Micro-step m takes the next
`batch_size * world_size` stream positions of its source; rank r gets the r-th slice of them. Each item
carries its own seed (from seed, source and stream position), used for its random augmentation, so:
  - the data of step N is a pure function of (seed, N), whatever the number of workers;
  - resuming at step N starts the loader exactly at step N, without reading the skipped samples;
  - k processes with batch b see the same global batch as one process with batch k*b.

Streaming sources (webdataset shards, an IterableDataset) have no index to plan with. The plan still decides
which source every micro-step reads; a micro-step that drew a stream takes the next `batch_size` items of
that stream from the stream's own DataLoader. The stream of one rank is read by R = max(1, run.num_workers)
readers (its DataLoader workers), world_size x R readers in all:

  - pass p over the shards orders them by a permutation seeded by (seed, source, p), the same on every
    rank, and reader k takes shards k, k + readers, k + 2*readers, ... of that order: within a pass every
    shard, hence every sample, is read by exactly one reader (webdataset's node/worker split, made
    explicit so that it does not depend on the launcher's environment);
  - a reader shuffles its samples in a `shuffle_buffer` window seeded by (seed, source, p, reader) and
    starts pass p + 1 when its shards are exhausted (endless, as the runner counts iterations);
  - item n of reader k gets its own seed (its random crop and prompt), as planned items do;
  - DataLoader hands out batch j of the source from worker j mod R, so after D batches worker w has
    produced ceil((D - w) / R) of them. A resumed run gives each worker the role of the reader whose batch
    comes next and lets it skip the samples that reader already produced: it re-reads them from the tar
    files (no image decoding) to replay its shuffle exactly. That costs reading the consumed part of the
    stream once per resume, at I/O speed.

Hence for a stream, the data of step N is a function of (seed, N, world size, num_workers); unlike planned
map-style sources it depends on the number of processes and workers (k processes do not see the samples
of one process), and a resume is exact only with the same world size, num_workers and batch size.
"""
from __future__ import annotations

import hashlib
import itertools
import signal
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from skingpt4.common.config import ConfigError

ItemKey = tuple[int, int, int]  # (source number, index in that dataset, item seed)
STREAM_API = ("urls", "read_pass", "to_item")  # what a stream source offers (WebDatasetSource)


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
            if not all(hasattr(dataset, attr) for attr in STREAM_API):
                raise ConfigError(
                    f"datasets.{name}: the runner cannot read a {type(dataset).__name__} stream: it reads streams "
                    f"that provide {', '.join(STREAM_API)} (the webdataset builder) or indexable datasets")
        elif len(dataset) == 0:
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
        self.streams = {n for n, s in enumerate(sources) if isinstance(s.dataset, IterableDataset)}
        self.sizes = [None if n in self.streams else len(s.dataset) for n, s in enumerate(sources)]
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

    def draws(self, source: int, before_micro_step: int) -> int:
        """How many micro-steps before `before_micro_step` read `source`."""
        return int((self.choices[:before_micro_step] == source).sum())

    def keys(self, micro_step: int) -> list[ItemKey]:
        source = int(self.choices[micro_step])
        assert source not in self.streams, "a stream's micro-batches come from its StreamReader"
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
            if int(self.plan.choices[micro_step]) not in self.plan.streams:
                yield self.plan.keys(micro_step)

    def __len__(self) -> int:
        return sum(source not in self.plan.streams for source in self.plan.choices[self.start:].tolist())


class PlannedItems(Dataset):
    """Reads item `index` of source `source` with torch's RNG seeded by the item's own seed (restored
    afterwards), so random augmentation depends on the item, not on the worker or process that reads it."""

    def __init__(self, sources: Sequence[Source]):
        self.sources = list(sources)

    def __len__(self) -> int:
        return sum(len(s.dataset) for s in self.sources if not isinstance(s.dataset, IterableDataset))

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


def check_stream_split(name: str, dataset: Any, world_size: int, num_workers: int) -> None:
    readers = world_size * max(1, num_workers)
    if len(dataset.urls) < readers:
        raise ConfigError(
            f"datasets.{name}: {len(dataset.urls)} shard(s) cannot be split over {readers} readers ({world_size} "
            f"process(es) x {max(1, num_workers)} DataLoader worker(s)); every reader needs at least one shard: "
            "write smaller shards (data_prep/write_shards.py --maxcount) or lower run.num_workers")


class StreamReader(IterableDataset):
    """The items of stream source `number` for one rank, from micro-batch `consumed_batches` of that source on."""

    def __init__(self, dataset: Any, name: str, number: int, seed: int, rank: int, world_size: int,
                 readers_per_rank: int, batch_size: int, consumed_batches: int):
        self.dataset, self.name, self.number, self.seed = dataset, name, number, seed
        self.rank, self.world_size, self.readers_per_rank = rank, world_size, readers_per_rank
        self.batch_size, self.consumed_batches = batch_size, consumed_batches

    def role(self, worker: int) -> int:
        """The reader (of this rank) whose batch worker `worker` produces first: the next batch is
        batch `consumed_batches`, which came from reader consumed_batches mod R."""
        return (self.consumed_batches + worker) % self.readers_per_rank

    def consumed_items(self, role: int) -> int:
        batches = max(0, -(-(self.consumed_batches - role) // self.readers_per_rank))  # ceil((D - role) / R)
        return batches * self.batch_size

    def __iter__(self) -> Iterator[Optional[dict[str, Any]]]:
        info = get_worker_info()
        role = self.role(info.id if info is not None else 0)
        reader, readers = self.rank * self.readers_per_rank + role, self.world_size * self.readers_per_rank
        skip = self.consumed_items(role)
        position = 0
        for stream_pass in itertools.count():
            produced = 0
            for sample in self.dataset.read_pass(self.shards(stream_pass, reader, readers),
                                                 derive_seed(self.seed, "stream", self.number, stream_pass, reader)):
                produced += 1
                if position >= skip:
                    yield self._item(sample, derive_seed(self.seed, "item", self.number, reader, readers, position))
                position += 1
            if produced == 0:
                raise RuntimeError(f"dataset '{self.name}': reader {reader} of {readers} read no sample from its "
                                   f"shards in pass {stream_pass} (all unreadable?); see the warnings above")

    def shards(self, stream_pass: int, reader: int, readers: int) -> list[str]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "shards", self.number, stream_pass))
        order = torch.randperm(len(self.dataset.urls), generator=generator).tolist()
        return [self.dataset.urls[i] for i in order[reader::readers]]

    def _item(self, sample: dict, seed: int) -> Optional[dict[str, Any]]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            item = self.dataset.to_item(sample)
        return None if item is None else dict(item, item_seed=seed, source=self.name)


class PlannedBatches:
    """The packed micro-batches of micro-steps start..total-1, in plan order: planned map-style micro-batches
    come from one DataLoader, each stream source's from its own (started when first needed)."""

    def __init__(self, plan: BatchPlan, start: int, planned: Callable[[], DataLoader],
                 streams: dict[int, Callable[[], DataLoader]]):
        self.plan, self.start, self.planned, self.streams = plan, start, planned, streams

    def __iter__(self) -> Iterator[dict]:
        iterators: dict[Optional[int], Iterator] = {}
        for micro_step in range(self.start, self.plan.total_micro_steps):
            source = int(self.plan.choices[micro_step])
            which = source if source in self.plan.streams else None
            if which not in iterators:
                # A DataLoader iterator draws its base seed from the global RNG; keep that stream untouched, so that
                # what draws from it during training (LoRA dropout) is the same after a resume.
                with torch.random.fork_rng(devices=[]):
                    iterators[which] = iter(self.planned() if which is None else self.streams[which]())
            yield next(iterators[which])


def build_train_loader(sources: Sequence[Source], collate: Callable, *, batch_size: int, world_size: int, rank: int,
                       seed: int, total_micro_steps: int, start_micro_step: int, num_workers: int,
                       pin_memory: bool) -> PlannedBatches:
    plan = BatchPlan(sources, batch_size, world_size, rank, seed, total_micro_steps)
    common = dict(collate_fn=CountingCollate(collate), num_workers=num_workers, pin_memory=pin_memory,
                  prefetch_factor=2 if num_workers > 0 else None,
                  worker_init_fn=_ignore_interrupts if num_workers > 0 else None)

    def planned() -> DataLoader:
        return DataLoader(PlannedItems(sources), batch_sampler=PlannedBatchSampler(plan, start_micro_step), **common)

    def stream(number: int) -> Callable[[], DataLoader]:
        source = sources[number]
        check_stream_split(source.name, source.dataset, world_size, num_workers)
        reader = StreamReader(source.dataset, source.name, number, seed, rank, world_size, max(1, num_workers),
                              batch_size, consumed_batches=plan.draws(number, start_micro_step))
        return lambda: DataLoader(reader, batch_size=batch_size, **common)

    return PlannedBatches(plan, start_micro_step, planned, {number: stream(number) for number in plan.streams})
