"""AdamW over the trainable parameters, with weight decay only where it makes sense.

Biases, normalisation weights and every other 1-D parameter get no weight decay (the usual rule, also
MiniGPT-4's); matrices (and higher-rank tensors) get `weight_decay`. Frozen parameters are left out.

`run.optimizer_impl` picks the AdamW kernel (`adamw_kernel`): `fused` (one kernel for all parameters), `foreach`
(batched per-op kernels), `for_loop` (one op per parameter, the reference) or `auto` (fused when every trainable
parameter is a floating-point tensor on CUDA; elsewhere torch's own default, for_loop on a CPU, so CPU runs keep
their numbers). All compute the same update to rounding (tests/test_perf_paths.py); `fused` on a CPU is ~3-6x
faster on the projection (docs/performance.md). A resumed run keeps its config's kernel, not the checkpoint's.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from skingpt4.common.config import ConfigError

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


def fused_supported(device: torch.device) -> bool:
    """Whether this torch has a fused AdamW kernel for `device` (CUDA always; CPU since torch 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - older torch
        return device.type == "cuda"
    return device.type in _get_fused_kernels_supported_devices()


def adamw_kernel(requested: str, params: Sequence[torch.Tensor]) -> dict:
    """AdamW's `fused` / `foreach` keywords for `run.optimizer_impl` (auto | fused | foreach | for_loop)."""
    if requested == "auto":
        on_cuda = bool(params) and all(p.device.type == "cuda" and p.is_floating_point() for p in params)
        if not on_cuda:
            return {"fused": None, "foreach": None}  # torch decides (for_loop on a CPU): the numbers of before
        requested = "fused"
    if requested == "fused":
        unsupported = sorted({str(p.device) for p in params if not fused_supported(p.device)})
        if unsupported:
            raise ConfigError(f"run.optimizer_impl=fused: this torch has no fused AdamW for {', '.join(unsupported)}; "
                              "choose one of auto, foreach, for_loop")
        return {"fused": True, "foreach": False}
    if requested == "foreach":
        return {"fused": False, "foreach": True}
    if requested == "for_loop":
        return {"fused": False, "foreach": False}
    raise ConfigError(f"run.optimizer_impl={requested}: choose one of auto, fused, foreach, for_loop")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: Sequence[float],
                    impl: str = "auto") -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay)
    kernel = adamw_kernel(impl, [p for group in groups for p in group["params"]])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **kernel)


def set_kernel(optimizer: torch.optim.Optimizer, kernel: dict) -> None:
    """Re-apply the configured kernel after `load_state_dict`, which restores the checkpoint's param-group flags."""
    for group in optimizer.param_groups:
        group.update(kernel)
