"""The training recipe of both SkinGPT-4 steps (docs/training.md): setup -> train -> cleanup.

    setup:   check the config (cheap, before anything heavy), start torch.distributed, build the datasets named
             in `datasets:`, the model (`build_model`), the prompt lines (`run.prompt_path`) and, with
             `run.cache_frozen_features`, the cached Q-Former outputs.
    train:   the `Runner` loop; each step is `train_step`: the language-model loss on the answer tokens, given
             [BOS | prompt | 32 projected image queries | prompt rest] (the model's template, `train` style).
    cleanup: the process group.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from skingpt4.common.config import ConfigError, config_path_problems, raise_path_problems, require_path, to_plain
from skingpt4.prompting.prompt_files import PROMPT_FILE_WHAT, draw_prompts, read_prompt_lines
from skingpt4.runners.config import RUN_PATHS, build_run_config
from skingpt4.runners.data import Source, as_sources
from skingpt4.runners.distributed import DistInfo, init_distributed, shutdown
from skingpt4.runners.metrics import TENSORBOARD_MISSING, tensorboard_available
from skingpt4.runners.validation import Validation
from skingpt4.runners.runner import (LAST_CHECKPOINT, Runner, TrainingError, TrainResult, already_holds_a_run,
                                     check_resume_schedule)

log = logging.getLogger("skingpt4.train")


@dataclass
class TrainStep:
    """A batch -> the model's loss; each item gets a prompt line drawn with its own seed (prompt_files.py).
    pack_tokens > 0: the samples are packed into rows of at most that many positions (`run.pack_sequences`)."""

    prompt_lines: Sequence[str]
    pack_tokens: int = 0

    def __call__(self, model: nn.Module, batch: dict) -> dict:
        samples = {"text_input": batch["text_input"],
                   "prompt": draw_prompts(self.prompt_lines, batch["item_seed"], batch.get("prompt"))}
        samples.update({k: batch[k] for k in ("queries", "image") if k in batch})
        return model(samples, pack_tokens=self.pack_tokens)


START_CKPT_WHAT = "the checkpoint to start from (for step 2: the step-1 checkpoint_last.pth)"


def check_config_paths(cfg: DictConfig) -> None:
    """Every wrong path training reads (model, datasets, run), in one error, before anything loads."""
    from skingpt4.datasets import dataset_path_problems
    from skingpt4.models.build import model_path_problems

    raise_path_problems(model_path_problems(cfg.get("model"), START_CKPT_WHAT)
                        + dataset_path_problems(cfg.get("datasets"))
                        + dataset_path_problems(cfg.get("validation"), "validation")
                        + config_path_problems(cfg, RUN_PATHS))


def check_config(cfg: DictConfig) -> None:
    """Cheap checks that must fail before anything heavy is loaded."""
    model_cfg = cfg.get("model")
    if model_cfg is None:
        raise ConfigError("the config has no 'model' section; see train_configs/ for examples")
    if model_cfg.get("ckpt"):
        require_path(model_cfg.ckpt, "model.ckpt", START_CKPT_WHAT, "file")
    if not cfg.get("datasets"):
        raise ConfigError("the config has no 'datasets' section: name at least one dataset builder to train on")
    run_cfg = cfg.get("run") or {}
    quantization = model_cfg.get("llm_quantization", "none")
    if run_cfg.get("sharding", "none") == "fsdp" and quantization not in (None, "none"):
        raise ConfigError(f"run.sharding=fsdp with model.llm_quantization={quantization}: FSDP shards plain weights, "
                          "not bitsandbytes' 4/8-bit ones; use llm_quantization: none (sharded) or run.sharding: none "
                          "(QLoRA on one GPU per process)")
    check_accelerate_launch(run_cfg.get("sharding", "none"))


# what `accelerate launch --config_file ...` puts into the environment when its config asks for FSDP or DeepSpeed
ACCELERATE_PLUGINS = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def check_accelerate_launch(sharding: str, environ=None) -> None:
    """Refuse an accelerate FSDP / DeepSpeed config instead of silently ignoring it: the runner does not hand the
    model to accelerate; it shards with its own FSDP2 units (`run.sharding: fsdp`, docs/scaling.md)."""
    import os

    environ = os.environ if environ is None else environ
    for variable, plugin in ACCELERATE_PLUGINS.items():
        if str(environ.get(variable, "")).lower() in ("1", "true", "yes"):
            hint = ("run.sharding: fsdp is already set and shards with this project's FSDP2 units"
                    if sharding == "fsdp" else "set run.sharding: fsdp for sharded training")
            raise ConfigError(f"accelerate launch was given a {plugin} config ({variable}=true), which this trainer "
                              f"does not read: launch with a plain accelerate config (or torchrun); {hint}")


def check_output_dir(run_cfg: DictConfig) -> None:
    """run.output_dir must be (or become) a directory, and a new run must not overwrite a finished one: both are
    found here, before the model loads, not after."""
    output = Path(run_cfg.output_dir).expanduser()
    for folder in (output, *output.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"run.output_dir '{run_cfg.output_dir}': '{folder}' is a file, not a directory; "
                                  "choose another run.output_dir")
            break
    if not run_cfg.resume_ckpt_path and (output / LAST_CHECKPOINT).exists():
        raise ConfigError(already_holds_a_run(output))


def read_training_prompts(path) -> list[str]:
    """run.prompt_path's lines; a file that is not UTF-8 text (a binary file named by mistake) is a ConfigError."""
    try:
        return read_prompt_lines(path)
    except UnicodeDecodeError as err:
        raise ConfigError(f"run.prompt_path '{path}' is not UTF-8 text ({err.reason} at byte {err.start}); it must be "
                          f"{PROMPT_FILE_WHAT}") from None


def check_finite_start(model: nn.Module, ckpt_path) -> None:
    """NaN or infinite trainable weights (a broken model.ckpt) would make every loss nan: refused before step 1."""
    for name, param in model.named_parameters():
        if param.requires_grad and not param.is_meta and not bool(torch.isfinite(param.detach()).all()):
            where = f"model.ckpt '{ckpt_path}'" if ckpt_path else "the model's initial weights"
            raise ConfigError(f"{where}: the trainable weight '{name}' holds NaN or infinite values; start from a "
                              "checkpoint with finite weights (or model.ckpt=null for a fresh projection)")


def build_validation(section, run_cfg: DictConfig, collate) -> Optional[Validation]:
    """The `validation:` datasets (blocks like those of `datasets:`; the image transform defaults to the eval
    one, a plain resize, so the loss does not depend on random crops), or None without that section."""
    from skingpt4.datasets import build_datasets

    blocks = {name: block for name, block in (section or {}).items() if block is not None}
    if not blocks:
        return None
    blocks = {name: OmegaConf.merge({"vis_processor": {"name": "blip2_image_eval"}}, block)
              for name, block in blocks.items()}
    sources = as_sources(build_datasets(OmegaConf.create(blocks), "validation"))
    return Validation(sources, collate, run_cfg.batch_size_train, run_cfg.seed, run_cfg.num_workers)


def setup(cfg: DictConfig) -> Runner:
    from skingpt4.datasets import build_datasets, collate
    from skingpt4.models.build import build_model
    from skingpt4.runners.feature_cache import cache_queries

    run_cfg = build_run_config(cfg.get("run"))
    check_output_dir(run_cfg)
    if run_cfg.tensorboard and not tensorboard_available():
        raise ConfigError(TENSORBOARD_MISSING)
    check_config_paths(cfg)
    check_config(cfg)
    if run_cfg.resume_ckpt_path:  # a resume into another step count is found before the model loads
        from skingpt4.models.checkpoints import read_training_checkpoint

        check_resume_schedule(read_training_checkpoint(run_cfg.resume_ckpt_path), run_cfg.resume_ckpt_path,
                              run_cfg.max_epoch, run_cfg.iters_per_epoch)
    prompt_lines = read_training_prompts(run_cfg.prompt_path)
    dist = init_distributed(run_cfg.device, run_cfg.dist_backend)
    logging.basicConfig(level=logging.INFO if dist.is_main else logging.WARNING,
                        format=f"%(asctime)s [rank {dist.rank}] %(name)s: %(message)s", datefmt="%H:%M:%S")
    random.seed(run_cfg.seed)
    torch.manual_seed(run_cfg.seed)  # the projection's initialisation when no model.ckpt is given
    sources = as_sources(build_datasets(cfg.datasets))
    validation = build_validation(cfg.get("validation"), run_cfg, collate)
    # sharded: the LLM is built on the meta device, and each process reads only its shards (runners/sharding.py)
    sharded = run_cfg.sharding == "fsdp" and dist.distributed
    model = build_model(cfg.model, device=str(dist.device), llm_on_meta=sharded)
    check_finite_start(model, cfg.model.get("ckpt"))
    if run_cfg.cache_frozen_features:
        sources = [Source(s.name, cache_queries(model, s, run_cfg.batch_size_train, dist), s.ratio) for s in sources]
    pack_tokens = run_cfg.pack_max_tokens if run_cfg.pack_sequences else 0
    return Runner(run_cfg, TrainStep(prompt_lines, pack_tokens), collate, model, sources, to_plain(cfg), dist,
                  validation)


def run_training(cfg: DictConfig) -> tuple[TrainResult, nn.Module]:
    """setup -> train -> cleanup. Returns the result and the trained model."""
    try:
        runner = setup(cfg)
        return runner.train(), runner.model
    finally:
        shutdown()


__all__ = ["DistInfo", "TrainStep", "TrainingError", "check_config", "check_output_dir", "run_training", "setup"]
