"""A SkinGPT-4 of the real architecture with random weights made directly on its device: no weight file, the tiny
tokenizer for ids (benchmarks/gpu_acceptance.py, tests). Not for answers: random weights know nothing.

    model = build_random_model("full", device="cuda", overrides={"llm_precision": "bf16"})

`full` is EVA-ViT-g (39 blocks), the BERT-base Q-Former, Linear(768 -> 5120) and the Llama-2-13B shapes with
Llama's 32 000-token vocabulary; `small` is the tiny variant's vision and Q-Former with a 2-layer, 64-wide Llama
over the tiny tokenizer's vocabulary (CPU-sized). Parts and precisions follow the `model:` block exactly as
`build_model` does (`overrides` are merged over the variant like a config's `model:` section).
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Optional

import torch

from skingpt4.common import registry
from skingpt4.common.precision import get_dtype, resolve_device

LLAMA_VOCAB = 32000
LLAMA2_13B = dict(vocab_size=LLAMA_VOCAB, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                  num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096, rms_norm_eps=1e-5)
ARCHS = {
    "full": ("llama2_13b_chat", LLAMA2_13B),
    "small": ("tiny", dict(vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                           rms_norm_eps=1e-6)),
}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def llm_shapes(arch: str, tokenizer) -> dict:
    """The LlamaConfig shapes of `arch` (small: the vocabulary of `tokenizer`)."""
    shapes = ARCHS[arch][1]
    return {**shapes, "vocab_size": shapes["vocab_size"] or len(tokenizer)}


def random_llm(shapes: dict, dtype: torch.dtype, device: torch.device, attn_implementation: str = "sdpa"):
    """A frozen random LlamaForCausalLM allocated on `device` in `dtype` from the start (13B: no fp32 copy)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shapes, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                         attn_implementation=attn_implementation)
    with torch.device(device), default_dtype(dtype):
        llm = LlamaForCausalLM(config)
    llm.to(dtype).eval()
    for param in llm.parameters():
        param.requires_grad = False
    return llm


def build_random_model(arch: str, device: str = "auto", overrides: Optional[dict] = None,
                       tokenizer_dir: Optional[str | Path] = None, llm_on_meta: bool = False):
    """SkinGPT-4 with random weights; `tokenizer_dir` holds (or receives) the tiny tokenizer. `llm_on_meta`: the
    LLM is made on the meta device (shapes only, it cannot run), to measure the vision side of the full size on a
    machine without the memory for 13B."""
    from skingpt4.models.build import model_config
    from skingpt4.models.llm import load_tokenizer
    from skingpt4.models.skin_gpt4 import SkinGPT4
    from skingpt4.models.tiny import write_tiny_tokenizer

    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: choose one of {', '.join(ARCHS)}")
    variant = ARCHS[arch][0]
    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="skingpt4_tokenizer_")
    if not (Path(tokenizer_dir) / "tokenizer.model").is_file():
        write_tiny_tokenizer(tokenizer_dir)
    cfg = model_config({**(overrides or {}), "variant": variant, "device": device, "llm_model": str(tokenizer_dir),
                        "ckpt": None})
    place = resolve_device(cfg.device)
    tokenizer = load_tokenizer(str(tokenizer_dir), cfg.tokenizer.pad_token)
    llm = random_llm(llm_shapes(arch, tokenizer), get_dtype(cfg.llm_precision, place, "model.llm_precision"),
                     torch.device("meta") if llm_on_meta else place, cfg.attn_implementation)
    with torch.device(place):  # ViT-g's 1B parameters are made on the GPU too, then cast by place()
        model = SkinGPT4(cfg, registry.chat_templates.get(cfg.template), tokenizer, llm)
        torch.nn.init.normal_(model.query_tokens, std=0.02)
    return model.place()


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
