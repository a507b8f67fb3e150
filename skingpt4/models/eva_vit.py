"""EVA-ViT-g as used by BLIP-2 / MiniGPT-4 / SkinGPT-4, built from timm's `Eva`, plus ln_vision.

timm's `Eva` block is the original EVA block (fused `qkv` weight without bias, separate `q_bias`/`v_bias`,
exact GELU, no layer-scale, absolute position embeddings) and uses the same state-dict names as the released
`eva_vit_g.pth`. BLIP-2 reads the features of block 39 of 40 and normalises them with `ln_vision`
(LayerNorm eps 1e-5, computed in fp32); we put ln_vision in timm's final `norm` slot so that
`forward_features(x)` is exactly `ln_vision(visual_encoder(x))`.

Key-mapping functions for the two foreign layouts sit next to the model:
  * `eva_checkpoint_to_ours`: `eva_vit_g.pth` (bare state dict, 40 blocks) -> our encoder (first `depth` blocks).
  * `hf_vision_to_ours` / `ours_to_hf_vision`: transformers' `Blip2VisionModel` names <-> ours.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import torch
from timm.models.eva import Eva
from torch import nn


@dataclass
class VisionConfig:
    image_size: int = 224
    patch_size: int = 14
    width: int = 1408
    depth: int = 39          # blocks used; the released checkpoint has 40, BLIP-2 drops the last one
    num_heads: int = 16
    mlp_hidden: int = 6144
    block_eps: float = 1e-6  # LayerNorm eps inside the blocks
    ln_vision_eps: float = 1e-5


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (BLIP-2's ln_vision, fp16-safe)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        out = nn.functional.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


def build_eva_vit(cfg: VisionConfig, fused_attn: bool = True) -> Eva:
    """EVA-ViT-g (or a smaller variant with the same structure) with ln_vision as its final norm. `fused_attn`:
    attention through PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels on CUDA), else
    timm's explicit matmul-softmax (the reference; same result to rounding)."""
    vit = Eva(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        num_classes=0,
        global_pool="",
        embed_dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        qkv_bias=True,
        qkv_fused=True,
        # timm computes int(width * mlp_ratio); a ratio just above mlp_hidden/width makes that exact.
        mlp_ratio=(cfg.mlp_hidden + 0.5) / cfg.width,
        norm_layer=partial(nn.LayerNorm, eps=cfg.block_eps),
        use_abs_pos_emb=True,
        use_rot_pos_emb=False,
        use_post_transformer_norm=True,
        use_fc_norm=False,
    )
    vit.norm = FP32LayerNorm(cfg.width, eps=cfg.ln_vision_eps)  # ln_vision
    for block in vit.blocks:
        block.attn.fused_attn = fused_attn
    assert vit.blocks[0].mlp.fc1.out_features == cfg.mlp_hidden
    return vit


# ---------------------------------------------------------------------------------------------------------
# eva_vit_g.pth -> ours

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def eva_checkpoint_to_ours(state_dict: dict, depth: int) -> tuple[dict, list[str]]:
    """Keep the first `depth` blocks of a bare EVA state dict. Returns (state dict, names of dropped keys).

    The checkpoint has no ln_vision: it comes from the BLIP-2 checkpoint (`ln_vision_to_ours`)."""
    kept, dropped = {}, []
    for key, value in state_dict.items():
        m = _BLOCK.match(key)
        if m and int(m.group(1)) >= depth:
            dropped.append(key)
        elif key.startswith("head.") or key.startswith("fc_norm.") or key == "norm.weight" or key == "norm.bias":
            dropped.append(key)  # classifier parts of other EVA releases; BLIP-2 uses none of them
        else:
            kept[key] = value
    return kept, dropped


def ln_vision_to_ours(state_dict: dict) -> dict:
    """`ln_vision.{weight,bias}` (BLIP-2 checkpoint) -> our encoder's final `norm`."""
    return {f"norm.{k.split('.', 1)[1]}": v for k, v in state_dict.items() if k.startswith("ln_vision.")}


# ---------------------------------------------------------------------------------------------------------
# transformers Blip2VisionModel <-> ours (names below are relative to `vision_model.` / our encoder)

_HF_TO_OURS_FIXED = {
    "embeddings.class_embedding": "cls_token",
    "embeddings.position_embedding": "pos_embed",
    "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
    "post_layernorm.weight": "norm.weight",
    "post_layernorm.bias": "norm.bias",
}
_HF_TO_OURS_LAYER = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.qkv": "attn.qkv",
    "self_attn.projection": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_OUR_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def hf_vision_to_ours(state_dict: dict) -> dict:
    """transformers `Blip2VisionModel` state dict -> ours. The fused `qkv.bias` [3W] is split into
    `q_bias`, (k bias, which must be zero) and `v_bias`."""
    out = {}
    for key, value in state_dict.items():
        if key in _HF_TO_OURS_FIXED:
            out[_HF_TO_OURS_FIXED[key]] = value
            continue
        m = _HF_LAYER.match(key)
        if not m or m.group(2) not in _HF_TO_OURS_LAYER:
            raise KeyError(f"unexpected key in a BLIP-2 vision state dict: '{key}'")
        idx, name, kind = m.groups()
        if name == "self_attn.qkv" and kind == "bias":
            q, k, v = value.chunk(3)
            if k.abs().max() > 0:
                raise ValueError(f"'{key}': EVA has no key bias, but the middle third of this bias is not zero")
            out[f"blocks.{idx}.attn.q_bias"], out[f"blocks.{idx}.attn.v_bias"] = q, v
        else:
            out[f"blocks.{idx}.{_HF_TO_OURS_LAYER[name]}.{kind}"] = value
    return out


def ours_to_hf_vision(state_dict: dict) -> dict:
    """Inverse of `hf_vision_to_ours`."""
    fixed = {v: k for k, v in _HF_TO_OURS_FIXED.items()}
    layer = {v: k for k, v in _HF_TO_OURS_LAYER.items()}
    out = {}
    for key, value in state_dict.items():
        if key in fixed:
            out[fixed[key]] = value
        elif key.endswith(".attn.q_bias"):
            idx = key.split(".")[1]
            v_bias = state_dict[f"blocks.{idx}.attn.v_bias"]
            out[f"encoder.layers.{idx}.self_attn.qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
        elif key.endswith(".attn.v_bias") or key.endswith(".attn.k_bias"):
            continue  # folded into qkv.bias above (k_bias is a zero buffer)
        else:
            m = _OUR_BLOCK.match(key)
            if not m or m.group(2) not in layer:
                raise KeyError(f"unexpected key in our vision state dict: '{key}'")
            idx, name, kind = m.groups()
            out[f"encoder.layers.{idx}.{layer[name]}.{kind}"] = value
    return out
