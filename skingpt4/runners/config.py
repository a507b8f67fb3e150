"""The `run:` section of a training config: its schema and the checks that must fail before training.

Every key, its default and meaning is listed here and in docs/training.md. Defaults are the paper's
settings where it states them and MiniGPT-4's where it does not (docs/training.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, ConfigPath, apply_schema, require_path
from skingpt4.prompting.prompt_files import PROMPT_FILE_WHAT, resolve_prompt_path

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "for_loop")
DEVICES = ("auto", "cpu", "cuda")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass
class RunConfig:
    prompt_path: Optional[str] = None   # prompts/*.txt: one prompt line per training item (none: image alone)
    # optimisation
    lr_sched: str = "linear_warmup_cosine_lr"
    init_lr: float = 1e-4
    min_lr: float = 8e-5
    warmup_lr: float = 1e-6
    warmup_steps: int = 5000
    lr_decay_rate: float = 0.9          # linear_warmup_step_lr only: lr = init_lr * rate**epoch
    weight_decay: float = 0.05          # none on bias / norm / 1-D parameters
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: Optional[float] = None  # clip to this norm; the norm is logged either way
    max_epoch: int = 20
    iters_per_epoch: int = 5000         # optimisation steps per epoch (each = accum_grad_iters micro-batches)
    batch_size_train: int = 2           # per process
    accum_grad_iters: int = 1
    precision: str = "fp32"             # fp32 | bf16 (autocast) | fp16 (autocast + loss scaling)
    optimizer_impl: str = "auto"        # AdamW kernel: auto (fused on CUDA, else torch's) | fused | foreach | for_loop
    # speed (docs/performance.md): pack each micro-batch's samples end to end into rows of at most pack_max_tokens
    # positions instead of padding every sample to the longest (same loss, almost no padding positions)
    pack_sequences: bool = False
    pack_max_tokens: int = 512
    seed: int = 42
    # data loading
    num_workers: int = 4
    cache_frozen_features: bool = False  # cache ViT+Q-Former outputs (needs the eval image transform)
    # devices / distribution (torch.distributed; launched by torchrun or accelerate launch)
    device: str = "auto"                # auto | cpu | cuda
    dist_backend: str = "auto"          # auto (nccl on GPU, gloo on CPU) | nccl | gloo
    sharding: str = "none"              # none (DDP replicas) | fsdp (FSDP2: weights sharded over processes)
    # outputs
    output_dir: str = "output/run"
    resume_ckpt_path: Optional[str] = None
    log_freq: int = 10                  # steps between metric records
    save_freq: int = 0                  # steps between checkpoint_last.pth saves (0: end of each epoch only)
    progress_bar: bool = True
    tensorboard: bool = False           # also TensorBoard scalars; needs the optional extra (.[tensorboard])
    stop_after_iters: Optional[int] = None  # stop (saving a checkpoint) once this many steps are done


def _prompt_file(value, key: str) -> None:
    require_path(str(resolve_prompt_path(value)), key, PROMPT_FILE_WHAT, "file")


# The paths training reads from `run:` (the recipe checks them with the model's and the datasets', at once).
RUN_PATHS = (ConfigPath("run.prompt_path", "prompt file", optional=True, check=_prompt_file),
             ConfigPath("run.resume_ckpt_path", "the checkpoint_last.pth of the run to continue", "checkpoint",
                        optional=True))


def build_run_config(section) -> DictConfig:
    """Validate the `run:` section; raise ConfigError with the key and the fix for any bad setting."""
    cfg = apply_schema(section, RunConfig, where="run")
    for key in ("init_lr", "min_lr", "warmup_lr", "lr_decay_rate", "weight_decay", "max_grad_norm", "betas"):
        values = cfg[key] if key == "betas" else [cfg[key]]
        if not all(v is None or math.isfinite(v) for v in values):  # inf / nan pass every comparison below
            raise ConfigError(f"run.{key} must be a finite number, got {cfg[key] if key != 'betas' else list(values)}")
    if not cfg.init_lr > 0:  # one rule, whatever the wrong value (negative, zero)
        raise ConfigError(f"run.init_lr must be > 0, got {cfg.init_lr}")
    for key in ("min_lr", "warmup_lr", "weight_decay"):
        if cfg[key] < 0:
            raise ConfigError(f"run.{key} must be >= 0, got {cfg[key]}")
    if cfg.min_lr > cfg.init_lr:
        raise ConfigError(f"run.min_lr ({cfg.min_lr}) must not exceed run.init_lr ({cfg.init_lr})")
    for key in ("max_epoch", "iters_per_epoch", "batch_size_train", "accum_grad_iters", "log_freq", "pack_max_tokens"):
        if cfg[key] < 1:
            raise ConfigError(f"run.{key} must be >= 1, got {cfg[key]}")
    for key in ("warmup_steps", "num_workers", "save_freq"):
        if cfg[key] < 0:
            raise ConfigError(f"run.{key} must be >= 0, got {cfg[key]}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"run.betas must be two numbers in [0, 1), got {list(cfg.betas)}")
    if cfg.max_grad_norm is not None and cfg.max_grad_norm <= 0:
        raise ConfigError(f"run.max_grad_norm must be > 0 or null, got {cfg.max_grad_norm}")
    if cfg.stop_after_iters is not None and cfg.stop_after_iters < 1:
        raise ConfigError(f"run.stop_after_iters must be >= 1 or null, got {cfg.stop_after_iters}")
    _check_choice(cfg.precision, PRECISIONS, "run.precision")
    _check_choice(cfg.optimizer_impl, OPTIMIZER_IMPLS, "run.optimizer_impl")
    _check_choice(cfg.device, DEVICES, "run.device")
    _check_choice(cfg.dist_backend, ("auto", "nccl", "gloo"), "run.dist_backend")
    _check_choice(cfg.sharding, ("none", "fsdp"), "run.sharding")
    if cfg.lr_sched not in registry.lr_schedulers:
        raise ConfigError("run.lr_sched: " + registry.unknown_choice_message(
            registry.lr_schedulers.kind, cfg.lr_sched, registry.lr_schedulers.names()))
    output = Path(cfg.output_dir).expanduser().resolve()
    if output == PACKAGE_DIR or PACKAGE_DIR in output.parents:
        raise ConfigError(f"run.output_dir '{cfg.output_dir}' is inside the skingpt4 package; "
                          "choose a directory outside it")
    return cfg


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got '{value}'")
