"""Training checkpoints: trainable parameters only, written atomically, readable by the original code.

Format (DESIGN §4, same keys as MiniGPT-4/SkinGPT-4 so either side reads the other's files):
    {"model": {trainable name: tensor}, "optimizer": ..., "config": plain dict, "scaler": ... or None,
     "epoch": int, "step": global optimisation steps done, "lr_scheduler": ..., "rng": ..., "format": 1}
Writing is `skingpt4.models.checkpoints.save_checkpoint` (atomic: temporary file, fsync, rename), the one
writer of the project's checkpoints.
"""
from __future__ import annotations

import os
import random
from typing import Any

import torch
from torch import nn

from skingpt4.models.checkpoints import CheckpointError, read_checkpoint

CHECKPOINT_FORMAT = 1


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad, detached and on CPU (the projection for SkinGPT-4)."""
    if hasattr(model, "trainable_state_dict"):
        state = model.trainable_state_dict()
    else:
        state = {name: p for name, p in model.named_parameters() if p.requires_grad}
    return {name: t.detach().to("cpu", copy=True) for name, t in state.items()}


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                              key: str = "run.resume_ckpt_path") -> None:
    """Load `state` into the trainable parameters; every trainable parameter must be present and nothing
    else may be (unlike the original's `strict=False`, which silently loads nothing when names differ)."""
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"config key '{key}': checkpoint '{source}' does not match the trainable parameters: "
            f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise CheckpointError(
                    f"config key '{key}': checkpoint '{source}': '{name}' has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(params[name].shape)}"
                )
            params[name].copy_(value)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_python_random_state(state["python"]))
    # Resuming on another number of GPUs (or on a CPU) keeps their fresh CUDA RNG states.
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_random_state(state):
    # torch.load(weights_only=True) returns the inner tuple as a list; random.setstate needs tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def load_checkpoint(path: str | os.PathLike, key: str = "run.resume_ckpt_path") -> dict[str, Any]:
    """Read a training checkpoint through the one checkpoint reader (tensors and plain containers only);
    every problem is a one-line CheckpointError naming `key` and the file."""
    return read_checkpoint(path, key, require=("model",))
