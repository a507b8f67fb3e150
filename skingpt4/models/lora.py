"""LoRA / QLoRA adapters on the frozen LLM (docs/scaling.md, "LoRA and QLoRA").

`model.lora.r > 0` adds low-rank adapters (PEFT's LoRA layers, injected in place: the LLM stays a transformers
CausalLM, so `generate`, gradient checkpointing and the KV cache work unchanged) to the LLM's Linear layers named
in `model.lora.target_modules`. The trainable set then is the projection + every adapter weight
(`TrainableSet.ADAPTER_MARKER` in their names); checkpoints hold both and load strictly. QLoRA is the same on a
4-bit base (`model.llm_quantization: 4bit`, CUDA + bitsandbytes). `merge_adapters` folds the adapters into the
base weights (what `python -m skingpt4.export --merge` writes).

Why PEFT: its LoRA layers are the reference implementation (also for bitsandbytes 4-bit/8-bit Linear layers,
which QLoRA needs), and the adapter weights it names (`lora_A` / `lora_B`) are what other tools read. It is an
optional extra (`pip install -e '.[lora]'`); without it a LoRA config is a one-line error.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List

import torch
from torch import nn

from skingpt4.common.config import ConfigError

log = logging.getLogger("skingpt4.lora")
ADAPTER_MARKER = ".lora_"   # in the name of every adapter parameter (lora_A, lora_B)


@dataclass
class LoraSettings:
    r: int = 0                  # adapter rank; 0: no adapters (the paper: the projection alone trains)
    alpha: float = 16.0         # scaling alpha / r
    dropout: float = 0.0        # on the adapter input, in training only
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # Linear layer names


def check_settings(lora) -> None:
    """The `model.lora` block's values (config validation, before anything is loaded)."""
    if lora.r < 0:
        raise ConfigError(f"model.lora.r must be >= 0 (0: no adapters), got {lora.r}")
    if lora.r == 0:
        return
    if not lora.alpha > 0:
        raise ConfigError(f"model.lora.alpha must be > 0, got {lora.alpha}")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"model.lora.dropout must be in [0, 1), got {lora.dropout}")
    if not lora.target_modules:
        raise ConfigError("model.lora.target_modules is empty: name the LLM's Linear layers to adapt "
                          "(e.g. [q_proj, v_proj] or [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj])")


def _peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("model.lora needs PEFT: pip install -e '.[lora]' (or set model.lora.r=0)") from None
    return peft


def add_adapters(llm: nn.Module, lora) -> nn.Module:
    """Inject LoRA layers (adapter weights in fp32 whatever the base dtype) into `llm`, in place."""
    peft = _peft()
    linear_names = sorted({name.rsplit(".", 1)[-1] for name, module in llm.named_modules()
                           if isinstance(module, nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")})
    unknown = [t for t in lora.target_modules if t not in linear_names]
    if unknown:
        raise ConfigError(f"model.lora.target_modules: {unknown} are not Linear layers of the LLM; "
                          f"choose from {', '.join(n for n in linear_names if n != 'lm_head')}")
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), bias="none")
    peft.inject_adapter_in_model(config, llm)
    for name, param in llm.named_parameters():
        if ADAPTER_MARKER in name:
            param.data = param.data.float()  # train adapters in fp32 (as the projection), even on an fp16 base
    n = sum(p.numel() for name, p in llm.named_parameters() if ADAPTER_MARKER in name)
    log.info("added LoRA adapters (r=%d, alpha=%g, dropout=%g) to %s: %s parameters", lora.r, lora.alpha,
             lora.dropout, ", ".join(lora.target_modules), f"{n:,}")
    return llm


def _lora_layers(module: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer)]


def has_adapters(module: nn.Module) -> bool:
    return any(ADAPTER_MARKER in name for name, _ in module.named_parameters())


def set_adapter_dropout(llm: nn.Module, training: bool) -> None:
    """The frozen LLM stays in eval mode; only its adapters' dropout follows the model's train/eval mode."""
    for _, layer in _lora_layers(llm):
        for dropout in layer.lora_dropout.values():
            dropout.train(training)


@torch.no_grad()
def merge_adapters(llm: nn.Module) -> int:
    """Fold every adapter into its base Linear (W += B A alpha/r) and put the plain Linear back in its place, so
    `llm` is an ordinary transformers model again. Returns the number of merged layers."""
    layers = _lora_layers(llm)
    for name, layer in layers:
        base = layer.get_base_layer()
        if type(base).__name__ in ("Linear4bit", "Linear8bitLt"):
            raise ConfigError("cannot merge LoRA adapters into a quantized (4-bit/8-bit) LLM; build the model with "
                              "model.llm_quantization=none (the adapters load onto the full-precision base)")
        delta = layer.get_delta_weight("default")
        base.weight.data += delta.to(base.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(llm.get_submodule(parent_name) if parent_name else llm, child, base)
    return len(layers)
