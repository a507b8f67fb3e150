"""From an eval config to a ready `ChatEngine` (shared by the CLI and the demo).

An eval config has a `model:` section (built by `skingpt4.models.build_model`; its variant names the chat
template) and an optional `run:` section validated against `ChatRunConfig`; every key is documented in
docs/inference.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.engine import ChatEngine
from skingpt4.chat.static_cache import KV_CACHES
from skingpt4.common.config import ConfigError, apply_schema, load_config, raise_path_problems
from skingpt4.models.build import model_path_problems


CHAT_CKPT_WHAT = "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection"


@dataclass
class ChatRunConfig:
    max_question_chars: int = 4000       # longer messages are refused with a message
    kv_cache: str = "dynamic"            # dynamic | static (preallocated buffers; docs/performance.md)
    compile_decoding: bool = False       # torch.compile the decoding step (needs kv_cache: static)
    untrained_projection: bool = False   # true: model.ckpt may be null (a random projection, on purpose)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)


def read_chat_config(cfg_path: str | os.PathLike, options: Iterable[str] = (),
                     device: Optional[str] = None) -> tuple[DictConfig, ChatRunConfig]:
    """Load and validate an eval config; `device` (cpu, cuda, cuda:N) overrides `model.device`."""
    cfg = load_config(cfg_path, options)
    if cfg.get("model") is None:
        raise ConfigError(f"config '{cfg_path}' has no 'model:' section (see eval_configs/ for examples)")
    if device is not None:
        cfg.model.device = device
    run = apply_schema(cfg.get("run"), ChatRunConfig, "run")
    try:
        run = OmegaConf.to_object(run)  # runs DecodingConfig's own checks
    except ValueError as err:
        raise ConfigError(f"run.decoding: {err}") from None
    if run.max_question_chars < 1:
        raise ConfigError(f"run.max_question_chars must be >= 1, got {run.max_question_chars}")
    if run.kv_cache not in KV_CACHES:
        raise ConfigError(f"run.kv_cache={run.kv_cache}: choose one of {', '.join(KV_CACHES)}")
    if run.compile_decoding and run.kv_cache != "static":
        raise ConfigError("run.compile_decoding=true needs run.kv_cache=static (choices: dynamic, static)")
    # every wrong path at once, before the model (minutes for a 13B LLM) loads
    raise_path_problems(model_path_problems(cfg.model, CHAT_CKPT_WHAT))
    return cfg, run


def build_engine(cfg: DictConfig, run: ChatRunConfig) -> ChatEngine:
    """Build the model (weights from the local paths in the config) and its engine."""
    from skingpt4.models.build import build_model

    return ChatEngine(build_model(cfg.model), max_question_chars=run.max_question_chars, kv_cache=run.kv_cache,
                      compile_decoding=run.compile_decoding)
