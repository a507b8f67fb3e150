"""Vision + Q-Former encode latency per batch, and what the ViT's precision does to the projected embeddings."""
from __future__ import annotations

import torch

from benchmarks.timing import PeakMemory, median_time


def vit_flops_per_image(model) -> float:
    """2 x parameters x tokens for the ViT's matmuls plus its attention scores (QK^T and AV), one forward."""
    vit = model.visual_encoder
    tokens = vit.patch_embed.num_patches + 1
    width, depth = vit.embed_dim, len(vit.blocks)
    params = sum(p.numel() for p in vit.blocks.parameters())
    return 2 * params * tokens + 4 * depth * tokens * tokens * width


def images(batch: int, model, seed: int = 0) -> torch.Tensor:
    size = model.cfg.vision.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


def measure_encode(model, batches, repeats: int) -> list[dict]:
    rows = []
    device = model.device
    for batch in batches:
        pixels = images(batch, model).to(device)
        with PeakMemory(device) as memory:
            seconds = median_time(lambda: model.encode_image(pixels), device, repeats=repeats, warmup=2)
        rows.append({"batch": batch, "median_ms": seconds * 1000, "images_per_s": batch / seconds,
                     "peak_mib": memory.peak_mib, "flops": vit_flops_per_image(model) * batch,
                     "vit_precision": str(model.vit_dtype).replace("torch.", "")})
    return rows


def set_vit_precision(model, dtype: torch.dtype) -> None:
    model.vit_dtype = dtype
    model.visual_encoder.to(dtype)
    model.visual_encoder.norm.float()  # ln_vision stays fp32


@torch.no_grad()
def vit_precision_effect(model, batch: int, repeats: int) -> dict:
    """Projected embeddings with the ViT in each precision the device runs (fp16 on CUDA only) against the same
    weights in fp32: relative error ||x - ref|| / ||ref||, worst per-query cosine, and the encode time at `batch`.
    The model's own ViT precision is restored afterwards."""
    original = model.vit_dtype
    saved = {k: v.clone() for k, v in model.visual_encoder.state_dict().items()}
    device = model.device
    pixels = images(batch, model, seed=1).to(device)
    set_vit_precision(model, torch.float32)
    reference = model.encode_image(pixels).float()
    ref_ms = median_time(lambda: model.encode_image(pixels), device, repeats=repeats, warmup=1) * 1000
    out = {"batch": batch, "fp32": {"median_ms": ref_ms}}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if dtype is torch.float16 and device.type != "cuda":
            out[name] = {"skipped": "fp16 ViT needs CUDA"}
            continue
        set_vit_precision(model, dtype)
        got = model.encode_image(pixels).float()
        cosine = torch.nn.functional.cosine_similarity(got.flatten(0, 1), reference.flatten(0, 1), dim=-1)
        out[name] = {"rel_error": float((got - reference).norm() / reference.norm()),
                     "min_cosine": float(cosine.min()),
                     "median_ms": median_time(lambda: model.encode_image(pixels), device, repeats=repeats,
                                              warmup=1) * 1000}
    set_vit_precision(model, original)
    model.visual_encoder.load_state_dict(saved)  # bit for bit the weights of before (bf16 rounded them)
    return out
