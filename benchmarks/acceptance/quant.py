"""8-bit and 4-bit LLM weights (bitsandbytes, CUDA) for the decode figures, made from random weights already on
the GPU. Real checkpoints are quantized by transformers while loading (`model.llm_quantization`, models/llm.py);
with no weight file this does the same per Linear layer of the decoder, with bitsandbytes' own modules: LLM.int8()
(threshold 6.0) or NF4 with the LLM's dtype as compute dtype. The output head stays in 16 bits, as transformers
leaves it."""
from __future__ import annotations

import gc
from typing import Optional

import torch
from torch import nn


def bitsandbytes_missing(device: torch.device) -> Optional[str]:
    """Why the quantized figures cannot be measured here (None: they can)."""
    if device.type != "cuda":
        return "bitsandbytes quantization needs a CUDA GPU"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed (pip install -e '.[quantization]', or carry its wheel)"
    return None


def _quantized_linear(linear: nn.Linear, mode: str, compute_dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    device = linear.weight.device
    weight = linear.weight.data.to("cpu")  # bitsandbytes quantizes while moving a CPU tensor to the GPU
    if mode == "8bit":
        module = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                     has_fp16_weights=False, threshold=6.0)
        module.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        module = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                   compute_dtype=compute_dtype, quant_type="nf4")
        module.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if linear.bias is not None:
        module.bias = nn.Parameter(linear.bias.data.to("cpu"), requires_grad=False)
    return module.to(device)


@torch.no_grad()
def quantize_llm_(llm: nn.Module, mode: str) -> nn.Module:
    """Replace every nn.Linear of the decoder layers in place (the 16-bit weights are freed layer by layer)."""
    if mode not in ("8bit", "4bit"):
        raise ValueError(f"mode must be 8bit or 4bit, got {mode!r}")
    compute_dtype = next(llm.parameters()).dtype
    for layer in llm.model.layers:
        for name, child in list(layer.named_modules()):
            for attr, sub in list(child.named_children()):
                if isinstance(sub, nn.Linear):
                    setattr(child, attr, _quantized_linear(sub, mode, compute_dtype))
        gc.collect()
    torch.cuda.empty_cache()
    return llm


def weight_bytes(llm: nn.Module) -> int:
    """Bytes of the LLM's stored weights (quantized ones as stored, with their scales)."""
    total = sum(t.numel() * t.element_size() for t in llm.parameters())
    total += sum(b.numel() * b.element_size() for b in llm.buffers())
    for module in llm.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None and getattr(state, "absmax", None) is not None:
            total += state.absmax.numel() * state.absmax.element_size()
        scb = getattr(getattr(module, "weight", None), "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total
