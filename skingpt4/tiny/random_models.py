"""SkinGPT-4 of the real architecture with random weights, made directly on its device through `build_model`: no
weight file, the tiny tokenizer for ids (benchmarks/gpu_acceptance.py, tests). Not for answers: random weights
know nothing.

    model = build_random_model("full", device="cuda", overrides={"llm_precision": "bf16"})

`full` is EVA-ViT-g (39 blocks), the BERT-base Q-Former, Linear(768 -> 5120) and the Llama-2-13B shapes with
Llama's 32 000-token vocabulary; `small` is the tiny variant's vision and Q-Former with a 2-layer, 64-wide Llama
over the tiny tokenizer's vocabulary (CPU-sized). Parts and precisions follow the `model:` block exactly as for a
real model (`overrides` are merged over the variant like a config's `model:` section).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import torch

LLAMA_VOCAB = 32000
LLAMA2_13B = dict(vocab_size=LLAMA_VOCAB, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                  num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096, rms_norm_eps=1e-5)
ARCHS = {
    "full": ("llama2_13b_chat", LLAMA2_13B),
    "small": ("tiny", dict(vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                           rms_norm_eps=1e-6)),
}


def build_random_model(arch: str, device: str = "auto", overrides: Optional[dict] = None,
                       tokenizer_dir: Optional[str | Path] = None, llm_on_meta: bool = False):
    """SkinGPT-4 with random weights; `tokenizer_dir` holds (or receives) the tiny tokenizer. `llm_on_meta`: the
    LLM is made on the meta device (shapes only), to measure the vision side of the full size on a machine without
    the memory for 13B."""
    from skingpt4.models.build import build_model
    from skingpt4.tiny.assets import write_tiny_tokenizer

    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: choose one of {', '.join(ARCHS)}")
    variant, shapes = ARCHS[arch]
    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="skingpt4_tokenizer_")
    if not (Path(tokenizer_dir) / "tokenizer.model").is_file():
        write_tiny_tokenizer(tokenizer_dir)
    cfg = {**(overrides or {}), "variant": variant, "device": device, "llm_model": str(tokenizer_dir), "ckpt": None}
    return build_model(cfg, random_llm_shapes=shapes, llm_on_meta=llm_on_meta)


@torch.no_grad()
def fixed_length_replies(model) -> list[int]:
    """Make greedy replies run to `max_new_tokens`: zero the output rows of EOS, of every token whose text holds a
    stop string's first character, and of the ids the tokenizer does not have (a random LLM's argmax then never
    picks them: the other logits' maximum is positive). The output matrix keeps its shape and cost. Returns the
    suppressed ids."""
    tokenizer = model.tokenizer
    stops = {stop[0] for stop in model.template.stop_strings}
    suppressed = {tokenizer.eos_token_id}
    for token_id in range(len(tokenizer)):
        if any(ch in tokenizer.decode([token_id]) for ch in stops):
            suppressed.add(token_id)
    head = model.llm.get_output_embeddings().weight
    suppressed.update(range(len(tokenizer), head.shape[0]))
    rows = torch.tensor(sorted(suppressed), device=head.device)
    head.index_fill_(0, rows, 0.0)
    return sorted(i for i in suppressed if i < len(tokenizer))
