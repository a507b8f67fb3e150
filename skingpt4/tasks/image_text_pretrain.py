"""The `image_text_pretrain` task: SkinGPT-4's training objective for both steps (DESIGN §5-§6).

It builds the model and datasets named in the config and turns a batch into the captioning loss: the
language-model loss on the answer tokens, given [BOS | prompt | 32 projected image queries | prompt rest].
Only the projection trains (the model freezes everything else).

Prompts: when the model has a prompt file, each item gets a prompt drawn with the item's own seed (from the
runner's data plan), so the prompt of every sample is reproducible, survives a resume and does not depend on
how many processes share the batch.

Frozen-feature cache (`run.cache_frozen_features: true`): the ViT + Q-Former outputs of an image do not change
during training when the image transform is deterministic (the eval transform). Each image is then encoded
once before training and the runner feeds `samples["queries"]` instead of pixels.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, require_path
from skingpt4.runners.data import Source, as_sources
from skingpt4.runners.distributed import DistInfo

log = logging.getLogger("skingpt4.train")


@registry.tasks.register("image_text_pretrain")
class ImageTextPretrainTask:
    def __init__(self, run_cfg: DictConfig):
        self.run_cfg = run_cfg
        self.prompt_lines: list[str] = []

    # ------------------------------------------------------------------------------------------ building
    def check_config(self, cfg: DictConfig) -> None:
        """Cheap checks that must fail before anything heavy is loaded."""
        model_cfg = cfg.get("model")
        if model_cfg is None:
            raise ConfigError("the config has no 'model' section; see train_configs/ for examples")
        if model_cfg.get("ckpt"):
            require_path(model_cfg.ckpt, "model.ckpt",
                         "the checkpoint to start from (for step 2: the step-1 checkpoint_last.pth)", "file")
        if not cfg.get("datasets"):
            raise ConfigError("the config has no 'datasets' section: name at least one dataset builder to train on")

    def build_datasets(self, datasets_cfg: DictConfig) -> list[Source]:
        from skingpt4.datasets import build_datasets

        return as_sources(build_datasets(datasets_cfg))

    def build_model(self, model_cfg: DictConfig, device: torch.device) -> nn.Module:
        from skingpt4.models.skin_gpt4 import read_prompts

        cfg = OmegaConf.merge(model_cfg, {"device": str(device)})
        arch = cfg.get("arch", "skin_gpt4")
        try:
            model_cls = registry.models.get(arch)
        except KeyError as err:
            raise ConfigError(f"model.arch: {err.args[0]}") from err
        model = model_cls.from_config(cfg)
        # The raw prompt lines; the model wraps a given prompt in its template.
        self.prompt_lines = read_prompts(model.cfg.prompt_path, "{}")
        return model

    def prepare_sources(self, model: nn.Module, sources: Sequence[Source], dist: DistInfo) -> list[Source]:
        if not self.run_cfg.cache_frozen_features:
            return list(sources)
        return [Source(s.name, cache_queries(model, s, self.run_cfg.batch_size_train, dist), s.ratio) for s in sources]

    # ------------------------------------------------------------------------------------------ steps
    @staticmethod
    def collate(items):
        from skingpt4.datasets import collate

        return collate(items)

    def draw_prompts(self, batch: dict) -> Optional[list[str]]:
        given = batch.get("prompt")
        if not self.prompt_lines:
            return given
        drawn = [random.Random(seed).choice(self.prompt_lines) for seed in batch["item_seed"]]
        if given is None:
            return drawn
        return [g if g is not None else d for g, d in zip(given, drawn)]  # a dataset's own prompt wins

    def train_step(self, model: nn.Module, batch: dict) -> dict:
        samples = {"text_input": batch["text_input"], "prompt": self.draw_prompts(batch)}
        if "queries" in batch:
            samples["queries"] = batch["queries"]
        else:
            samples["image"] = batch["image"]
        return model(samples)


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
