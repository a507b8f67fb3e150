"""Streaming source over webdataset `.tar` shards (one `jpg`/`png` + one `json` with a `caption` per sample),
for sets too large for a folder or kept on remote storage (`pipe:` / http URLs work as in webdataset).

Iterated on its own, shards are split across distributed ranks and DataLoader workers; a damaged shard or
sample is counted and skipped, never fatal. With `repeat` the stream restarts when the shards are exhausted.
The training runner reads it through `read_pass` + `to_item` instead (skingpt4/runners/data.py): it
splits and re-iterates the shards itself, so that a resumed run can find its place in the stream.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import braceexpand  # webdataset's own dependency for shard patterns
import webdataset as wds
from torch.utils.data import IterableDataset

from skingpt4.common.config import ConfigError
from skingpt4.common.images import ImageError, load_image
from skingpt4.datasets.bad_images import BadSampleCounter

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def resolve_shards(shards: str | Sequence[str], key: str) -> list[str]:
    """A directory (all its *.tar), a brace pattern ('shard-{000000..000009}.tar'), a URL or a list of these
    -> the shard list; local shards must exist (error names the config key)."""
    entries = [shards] if isinstance(shards, str) else list(shards or [])
    urls: list[str] = []
    for entry in entries:
        entry = str(entry)
        if Path(entry).is_dir():
            found = sorted(str(p) for p in Path(entry).glob("*.tar"))
            if not found:
                raise ConfigError(f"config key '{key}': directory '{entry}' holds no .tar shards")
            urls.extend(found)
        else:
            urls.extend(braceexpand.braceexpand(entry))
    if not urls:
        raise ConfigError(f"config key '{key}' is not set; put webdataset shards there (a directory, a "
                          "pattern like 'shards/shard-{000000..000009}.tar' or a list)")
    local_missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).is_file()]
    if local_missing:
        raise ConfigError(f"config key '{key}': {len(local_missing)} shard(s) not found, first: '{local_missing[0]}'")
    return urls


class WebDatasetSource(IterableDataset):
    def __init__(self, urls: list[str], vis_processor: Callable, text_processor: Callable, name: str,
                 max_pixels: Optional[int], shuffle_buffer: int = 1000, repeat: bool = True, seed: int = 0):
        self.urls = urls
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.name = name
        self.max_pixels = max_pixels
        self.shuffle_buffer = shuffle_buffer
        self.repeat = repeat
        self.seed = seed
        self.bad = BadSampleCounter(name)
        # as the folder datasets announce their source: what this stream reads (its length is unknown)
        first = urls[0] if urls else "-"
        logger.info("dataset '%s': webdataset stream of %d shard(s) from '%s'%s (shuffle buffer %d, %s)", name,
                    len(urls), first, f" ... '{urls[-1]}'" if len(urls) > 1 else "", shuffle_buffer,
                    "repeating" if repeat else "one pass")

    def _tar_error(self, err: Exception) -> bool:
        self.bad.add("unreadable", f"webdataset error: {err}")
        return True  # keep going with the next sample/shard

    def _pipeline(self, epoch: int) -> wds.WebDataset:
        shuffle = self.shuffle_buffer > 0
        pipeline = wds.WebDataset(self.urls, handler=self._tar_error, shardshuffle=len(self.urls) if shuffle else 0,
                                  nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                                  empty_check=False, seed=self.seed + epoch)
        if shuffle:
            pipeline = pipeline.shuffle(self.shuffle_buffer, seed=self.seed + epoch)
        return pipeline

    def __iter__(self) -> Iterator[Optional[dict[str, Any]]]:
        epoch = 0
        while True:
            produced = 0
            for sample in self._pipeline(epoch):
                produced += 1
                yield self.to_item(sample)
            epoch += 1
            if not self.repeat or produced == 0:  # a worker without shards must not spin forever
                return

    def read_pass(self, urls: Sequence[str], seed: int) -> Iterator[dict[str, Any]]:
        """The raw (undecoded) samples of `urls`, read in this order and shuffled in a `shuffle_buffer` window
        seeded by `seed`. The training runner splits and orders the shards itself and decodes with `to_item`,
        so it can skip samples on resume without decoding them."""
        stages = [wds.SimpleShardList(list(urls)), wds.tarfile_to_samples(handler=self._tar_error)]
        if self.shuffle_buffer > 0:
            stages.append(wds.shuffle(self.shuffle_buffer, seed=seed))
        return iter(wds.DataPipeline(*stages))

    def to_item(self, sample: dict[str, Any]) -> Optional[dict[str, Any]]:
        key = sample.get("__key__", "?")
        where = f"sample '{key}' of '{sample.get('__url__', '?')}'"
        image_key = next((k for k in IMAGE_KEYS if k in sample), None)
        if image_key is None:
            self.bad.add("missing", f"{where} has no image ({'/'.join(IMAGE_KEYS)})")
            return None
        try:
            record = json.loads(sample["json"]) if "json" in sample else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            self.bad.add("bad_record", f"{where}: unreadable json: {err}")
            return None
        caption = self.text_processor(record.get("caption", "")) if isinstance(record, dict) else ""
        if not caption:
            self.bad.add("bad_record", f"{where}: no caption in its json")
            return None
        try:
            image = load_image(sample[image_key], max_pixels=self.max_pixels, name=where)
        except ImageError as err:
            self.bad.add(err.reason, err.detail)
            return None
        metadata = {k: v for k, v in record.items() if k not in ("caption", "image")}
        return {"image": self.vis_processor(image), "text_input": caption, "image_id": key,
                **metadata, "source": self.name}

