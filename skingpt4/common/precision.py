"""Devices and precisions, resolved in one place for the model parts and the training loop (docs/model.md).

Config values: a device is `auto | cpu | cuda | cuda:N`; a precision is `auto | fp32 | bf16 | fp16`, where `auto`
means fp16 on CUDA (as the original runs the frozen parts) and fp32 on a CPU.
"""
from __future__ import annotations

import contextlib

import torch

from skingpt4.common.config import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, key: str = "model.device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}={name}: choose one of auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but no CUDA GPU is available; use cpu (or auto)")
    return device


def get_dtype(name: str, device: torch.device, key: str) -> torch.dtype:
    """`auto | fp32 | bf16 | fp16` -> a torch dtype for `device`; fp16 needs CUDA (CPU kernels are missing or slow)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"{key}={name}: choose one of auto, {', '.join(DTYPES)}")
    if DTYPES[name] is torch.float16 and device.type != "cuda":
        raise ConfigError(f"{key}=fp16 needs a CUDA device; on CPU use bf16 or fp32")
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision in `dtype` on `device` (CUDA: bf16/fp16, CPU: bf16); fp32 runs as is."""
    if dtype is torch.float32 or (dtype is torch.float16 and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
