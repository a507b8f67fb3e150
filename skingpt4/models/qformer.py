"""The BLIP-2 Q-Former as MiniGPT-4/SkinGPT-4 use it: transformers' `Blip2QFormerModel` (a BERT-base whose
even layers cross-attend to the image features; text embeddings, text FFN and LM head removed) with 32
learned `query_tokens`.

Key mapping for LAVIS checkpoints (`blip2_pretrained_flant5xxl.pth`, names under `Qformer.bert.`) sits here:
  * `lavis_to_ours(state_dict)` -> (our Q-Former state dict, names of ignored text-only keys)
  * `ours_to_lavis(state_dict)` -> LAVIS names (used to write LAVIS-format files and in round-trip tests)
Our Q-Former names are transformers' names, so a transformers BLIP-2 snapshot's `qformer.*` needs only the
prefix stripped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import Blip2QFormerConfig, Blip2QFormerModel


@dataclass
class QFormerConfig:
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2   # cross-attention on layers 0, 2, 4, ...
    layer_norm_eps: float = 1e-12
    num_query_tokens: int = 32


def build_qformer(cfg: QFormerConfig, vision_width: int, attn_implementation: str = "sdpa") -> Blip2QFormerModel:
    config = Blip2QFormerConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        cross_attention_frequency=cfg.cross_attention_frequency,
        layer_norm_eps=cfg.layer_norm_eps,
        encoder_hidden_size=vision_width,
        hidden_act="gelu",
        use_qformer_text_input=False,
    )
    config._attn_implementation = attn_implementation  # sdpa | eager
    return Blip2QFormerModel(config)


_LAVIS_PREFIX = "Qformer.bert."
# Text-only parts of the LAVIS Q-Former that MiniGPT-4 deletes: word/position embeddings, the LM head and the
# per-layer text FFN (`intermediate.*`/`output.*`, not `intermediate_query`/`output_query`/`attention.output`).
_LAVIS_TEXT_ONLY = re.compile(
    r"^Qformer\.(cls\.|bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)"
    r"|bert\.encoder\.layer\.\d+\.(intermediate|output)\.)"
)


def lavis_to_ours(state_dict: dict) -> tuple[dict, list[str]]:
    """LAVIS `Qformer.*` keys -> `Blip2QFormerModel` keys. Keys outside `Qformer.` are not looked at."""
    out, ignored = {}, []
    for key, value in state_dict.items():
        if not key.startswith("Qformer."):
            continue
        if _LAVIS_TEXT_ONLY.match(key):
            ignored.append(key)
            continue
        if not key.startswith(_LAVIS_PREFIX):
            raise KeyError(f"unexpected Q-Former key '{key}' (expected names under '{_LAVIS_PREFIX}')")
        name = key[len(_LAVIS_PREFIX):]
        if name.startswith("embeddings.LayerNorm."):
            name = "layernorm." + name[len("embeddings.LayerNorm."):]
        name = name.replace(".crossattention.self.", ".crossattention.attention.")
        name = name.replace(".attention.self.", ".attention.attention.")
        out[name] = value
    return out, ignored


def ours_to_lavis(state_dict: dict) -> dict:
    out = {}
    for name, value in state_dict.items():
        if name.startswith("layernorm."):
            name = "embeddings.LayerNorm." + name[len("layernorm."):]
        name = name.replace(".crossattention.attention.", ".crossattention.self.")
        name = name.replace(".attention.attention.", ".attention.self.")
        out[_LAVIS_PREFIX + name] = value
    return out
