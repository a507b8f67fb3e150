"""Chat figures: time to first token and decode speed at turn 1 (the first clinical question) and turn 10 of one
conversation per row, KV cache size and peak memory, through `ChatEngine` itself (prompt layout, KV-cache reuse,
stop criteria included). Replies are made to run to their token budget (`fixed_length_replies`), so every
variant decodes the same number of tokens; turns 2-9 are shorter (`fill_tokens`) to save time."""
from __future__ import annotations

import time
from typing import Optional

import torch

from benchmarks.acceptance.common import mib
from benchmarks.acceptance.encode import images
from benchmarks.timing import PeakMemory, TokenClock, sync
from skingpt4.chat import ChatEngine, DecodingConfig
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

FOLLOW_UPS = ["Is it contagious?", "How long will it last?", "Should I see a doctor soon?", "Can I use a cream?",
              "What should I avoid?", "Could it be something else?"]
QUESTIONS = list(CLINICAL_PROMPTS) + FOLLOW_UPS  # 10 turns; turn 1 is the first clinical question
MEASURED = (1, 10)


def kv_bytes_per_token(llm) -> int:
    """Keys + values of one position over all layers, in the LLM's dtype."""
    config = llm.config
    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    itemsize = next(llm.parameters()).element_size() if not _quantized(llm) else 2
    return 2 * config.num_hidden_layers * heads * head_dim * itemsize


def _quantized(llm) -> bool:
    return any(type(m).__module__.startswith("bitsandbytes") for m in llm.modules())


def cache_mib(conv) -> float:
    if conv.cache is None:
        return 0.0
    return mib(t for layer in conv.cache.layers if layer.is_initialized for t in (layer.keys, layer.values))


def run_conversation(engine: ChatEngine, batch: int, max_new_tokens: int, fill_tokens: int,
                     variant: str) -> list[dict]:
    """One conversation per row (`batch` rows), 10 turns; figures of the turns in MEASURED."""
    device = engine.model.device
    convs = [engine.new_conversation(images(1, engine.model, seed=10 + i)[0]) for i in range(batch)]
    rows = []
    for turn, question in enumerate(QUESTIONS, 1):
        measured = turn in MEASURED
        decoding = DecodingConfig(do_sample=False, max_new_tokens=max_new_tokens if measured else fill_tokens)
        sync(device)
        with PeakMemory(device) as memory:
            clock = TokenClock()
            if batch == 1:
                engine.ask(convs[0], question, decoding, streamer=clock)
            else:
                engine.ask_batch(convs, [question] * batch, decoding, streamer=clock)
            sync(device)
            total_s = time.perf_counter() - clock.start
        if not measured:
            continue
        report = convs[0].last_turn
        rows.append({"variant": variant, "batch": batch, "turn": turn, "prompt_tokens": report.prompt_tokens,
                     "reused_tokens": report.reused_tokens, "new_tokens": report.new_tokens,
                     "ttft_ms": clock.ttft_ms(), "decode_tok_s": clock.decode_tok_s(),
                     "decode_tok_s_total": clock.decode_tok_s() * batch, "turn_s": total_s,
                     "peak_mib": memory.peak_mib, "reserved_mib": memory.reserved_mib,
                     "kv_cache_mib": cache_mib(convs[0]),
                     "kv_cache_bound_mib": kv_bytes_per_token(engine.model.llm) * int(convs[0].cache.get_seq_length())
                     / 2**20 if convs[0].cache is not None else 0.0,
                     "reply_ids": [c.last_turn.reply_ids for c in convs]})
    return rows


def same_tokens(rows: list[dict], reference: list[dict]) -> Optional[bool]:
    """Whether a variant's measured replies equal the reference variant's (same batch and turn), token for token."""
    ref = {(r["batch"], r["turn"]): r["reply_ids"] for r in reference}
    pairs = [(r["reply_ids"], ref.get((r["batch"], r["turn"]))) for r in rows]
    if not pairs or any(b is None for _, b in pairs):
        return None
    return all(a == b for a, b in pairs)


def first_difference(rows: list[dict], reference: list[dict]) -> Optional[dict]:
    ref = {(r["batch"], r["turn"]): r["reply_ids"] for r in reference}
    for r in rows:
        for seq, (a, b) in enumerate(zip(r["reply_ids"], ref.get((r["batch"], r["turn"]), []))):
            for pos, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    return {"batch": r["batch"], "turn": r["turn"], "sequence": seq, "position": pos}
    return None


def chat_variant(model, variant: str, batches, max_new_tokens: int, fill_tokens: int,
                 compile_backend: str = "inductor") -> list[dict]:
    """`dynamic` (the default engine), `static` (preallocated static cache) or `compiled` (static + torch.compile);
    quantized LLMs run the default engine."""
    kwargs = {"static": {"kv_cache": "static"},
              "compiled": {"kv_cache": "static", "compile_decoding": True, "compile_backend": compile_backend}}
    engine = ChatEngine(model, **kwargs.get(variant, {}))
    rows = []
    for batch in batches:
        run_conversation(engine, batch, 4, 2, variant)  # warm-up (compiles and records CUDA graphs when compiled)
        rows += run_conversation(engine, batch, max_new_tokens, fill_tokens, variant)
    del engine
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows
