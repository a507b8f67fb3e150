"""Processors named in YAML (`vis_processor: {name: blip2_image_train, ...}`), built by `build_processor`."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, apply_schema
from skingpt4.processors.image import Blip2ImageEvalProcessor, Blip2ImageTrainProcessor  # noqa: F401 (registration)
from skingpt4.processors.text import BlipCaptionProcessor  # noqa: F401 (registration)


def build_processor(cfg: Any, where: str = "processor"):
    """`cfg` = {name: <registered processor>, ...its parameters}; unknown names or keys are ConfigErrors."""
    if cfg is None or "name" not in cfg:
        raise ConfigError(f"'{where}' needs a 'name' (one of: {', '.join(registry.processors.names())})")
    params = OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg.copy()
    name = params.pop("name")
    try:
        cls = registry.processors.get(name)
    except KeyError as err:
        raise ConfigError(f"'{where}.name': {err.args[0]}") from err
    checked = apply_schema(params, cls.Config, where=where)
    try:
        return cls(**OmegaConf.to_container(checked, resolve=True))
    except ValueError as err:
        raise ConfigError(f"'{where}': {err}") from err


__all__ = ["build_processor", "Blip2ImageTrainProcessor", "Blip2ImageEvalProcessor", "BlipCaptionProcessor"]
