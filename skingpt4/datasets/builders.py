"""Dataset builders named in YAML, and `build_datasets(cfg.datasets)`.

    datasets:
      skincon_concepts:                      # block name = builder name ...
        storage: data/synthetic/prepared/skincon
        sample_ratio: 1
      extra_pairs:                           # ... or any name with an explicit `builder`
        builder: image_text_pairs
        storage: /data/my_pairs
        vis_processor: {name: blip2_image_train, image_size: 224}
        text_processor: {name: blip_caption, max_words: 120}

Folder builders read the prepared format (filter_cap.json + image/); `webdataset` streams `.tar` shards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig

from skingpt4.common import registry
from skingpt4.common.config import (ConfigError, ConfigPath, apply_schema, config_path_problems, require_path,
                                    to_plain)
from skingpt4.common.images import DEFAULT_MAX_PIXELS
from skingpt4.datasets.image_text_pairs import ImageTextPairsDataset
from skingpt4.datasets.webdataset_source import WebDatasetSource, resolve_shards
from skingpt4.processors import build_processor


def _train_image() -> dict:
    return {"name": "blip2_image_train"}


def _caption() -> dict:
    return {"name": "blip_caption"}


@dataclass
class FolderSourceConfig:
    builder: Optional[str] = None      # registered builder; defaults to the block's name
    storage: Optional[str] = None      # prepared folder: filter_cap.json + image/
    sample_ratio: float = 1.0          # relative weight when several sources are mixed in one run
    vis_processor: Any = field(default_factory=_train_image)
    text_processor: Any = field(default_factory=_caption)
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS   # decompression-bomb guard; null = no limit


@dataclass
class WebDatasetConfig:
    builder: Optional[str] = None
    shards: Any = None                 # directory of *.tar, brace pattern, URL, or a list of these
    sample_ratio: float = 1.0
    vis_processor: Any = field(default_factory=_train_image)
    text_processor: Any = field(default_factory=_caption)
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
    shuffle_buffer: int = 1000         # samples held for shuffling; 0 = stream order
    repeat: bool = True                # restart at the end of the shards (iteration-based training)
    seed: int = 0


class FolderBuilder:
    """Image-text pairs from a prepared folder. `required_fields` tells a wrong folder from the right one; `paths`
    are what the builder reads from its block (`dataset_path_problems`, checked before anything loads)."""

    Config = FolderSourceConfig
    required_fields: tuple[str, ...] = ()
    what = "a prepared folder with filter_cap.json and image/ (see data_prep/README.md)"

    @property
    def paths(self) -> tuple[ConfigPath, ...]:
        return (ConfigPath("storage", self.what, "dir"),)

    def build(self, cfg: DictConfig, name: str) -> ImageTextPairsDataset:
        storage = require_path(cfg.storage, f"datasets.{name}.storage", self.what, must_be="dir")
        return ImageTextPairsDataset(
            storage,
            vis_processor=build_processor(cfg.vis_processor, f"datasets.{name}.vis_processor"),
            text_processor=build_processor(cfg.text_processor, f"datasets.{name}.text_processor"),
            name=name, max_pixels=cfg.max_pixels, required_fields=self.required_fields)


@registry.datasets.register("image_text_pairs")
class ImageTextPairsBuilder(FolderBuilder):
    pass


@registry.datasets.register("skincon_concepts")
class SkinconConceptsBuilder(FolderBuilder):
    """Step 1: SKINCON images with concept captions (data_prep/prepare_skincon.py)."""

    required_fields = ("concepts",)
    what = "a SKINCON set prepared by data_prep/prepare_skincon.py"


@registry.datasets.register("dermnet")
class DermnetBuilder(FolderBuilder):
    """Step 2: Dermnet images with class captions (data_prep/prepare_dermnet.py)."""

    required_fields = ("label",)
    what = "a Dermnet split prepared by data_prep/prepare_dermnet.py"


@registry.datasets.register("skin_notes")
class SkinNotesBuilder(FolderBuilder):
    """Step 2: doctors' notes in the SkinGPT-4/MiniGPT-4 folder format (checked by data_prep/check_notes.py)."""

    what = "a doctors' notes folder with filter_cap.json and image/ (see data_prep/check_notes.py)"


@registry.datasets.register("webdataset")
class WebDatasetBuilder:
    Config = WebDatasetConfig
    paths = (ConfigPath("shards", "webdataset shards", check=resolve_shards),)

    def build(self, cfg: DictConfig, name: str) -> WebDatasetSource:
        return WebDatasetSource(
            resolve_shards(to_plain(cfg.shards), f"datasets.{name}.shards"),
            vis_processor=build_processor(cfg.vis_processor, f"datasets.{name}.vis_processor"),
            text_processor=build_processor(cfg.text_processor, f"datasets.{name}.text_processor"),
            name=name, max_pixels=cfg.max_pixels, shuffle_buffer=cfg.shuffle_buffer, repeat=cfg.repeat,
            seed=cfg.seed)


def used_blocks(datasets: Any) -> list[tuple[Any, Any]]:
    """(name, block) of the sources a run reads. A block set to null (`datasets.skin_notes=null`) or with
    `sample_ratio: 0` is left out: how a derived config or a command line drops a source of its base config."""
    used = []
    for name, block in (datasets or {}).items():
        if block is None or (hasattr(block, "get") and block.get("sample_ratio") == 0):
            continue
        used.append((name, block))
    return used


def build_datasets(datasets_cfg: Any, section: str = "datasets") -> list[tuple[str, Any, float]]:
    """cfg.datasets (or another `section` of the same form, e.g. `validation`) -> [(name, dataset, sample_ratio)],
    in the order of the config."""
    if not datasets_cfg:
        raise ConfigError(f"config section '{section}' is empty; name at least one of: "
                          + ", ".join(registry.datasets.names()))
    built = []
    for name, block in used_blocks(datasets_cfg):
        builder_name = block.get("builder") or name
        try:
            builder = registry.datasets.get(builder_name)()
        except KeyError as err:
            raise ConfigError(f"'{section}.{name}': {err.args[0]} (set 'builder:' when the block has another name)") from err
        cfg = apply_schema(block, builder.Config, where=f"{section}.{name}")
        if not cfg.sample_ratio > 0:
            raise ConfigError(f"'{section}.{name}.sample_ratio' must be > 0 (or 0 to leave the source out), got "
                              f"{cfg.sample_ratio}")
        if cfg.max_pixels is not None and not cfg.max_pixels >= 1:
            raise ConfigError(f"'{section}.{name}.max_pixels' must be >= 1 or null (no limit), got {cfg.max_pixels}")
        built.append((str(name), builder.build(cfg, str(name)), float(cfg.sample_ratio)))
    return built


def dataset_path_problems(datasets: Any, section: str = "datasets") -> list[str]:
    """Every bad path of a `datasets:` section, as each registered builder declares them (`paths`). An unknown
    builder is reported when the datasets are built, with the valid names."""
    problems = []
    for name, block in used_blocks(datasets):
        builder = block.get("builder") or name
        if builder in registry.datasets:
            problems += config_path_problems(block, registry.datasets.get(builder)().paths, prefix=f"{section}.{name}.")
    return problems
