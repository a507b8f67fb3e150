"""AdamW over the trainable parameters, with weight decay only where it makes sense.

Biases, normalisation weights and every other 1-D parameter get no weight decay (the usual rule, also
MiniGPT-4's); matrices (and higher-rank tensors) get `weight_decay`. Frozen parameters are left out.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

_NO_DECAY_NAME_PARTS = ("bias", "norm", "ln_", "layernorm")


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether `param` (called `name`) should get weight decay."""
    lowered = name.lower()
    return param.ndim >= 2 and not any(part in lowered for part in _NO_DECAY_NAME_PARTS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if decays(name, param) else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameter (nothing requires grad): nothing to train")
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: Sequence[float]) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas))
