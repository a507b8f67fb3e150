"""Chat speed and memory per turn over a 10-turn conversation: time to first token (TTFT), decode tokens/s,
peak memory and KV-cache size, greedy, at batch 1 (`ChatEngine.ask`) and batch N (`ChatEngine.ask_batch`, N
conversations at once, left-padded); both reuse each conversation's KV cache across turns.

    python -m benchmarks.bench_chat                                   # tiny model on CPU (make tiny_assets first)
    python -m benchmarks.bench_chat --cfg-path eval_configs/skingpt4_llama2_13bchat.yaml --device cuda:0
    python -m benchmarks.bench_chat --kv-cache static --compile         # static cache + torch.compile

Timing comes from the LLM's own forward passes: the first pass of a turn is the prefill (its end is the first
token), every later pass is one decoding step. Peak memory is the process's resident set (CPU, sampled every
2 ms) or torch's peak allocation (CUDA), per turn. With --repeats R the conversation runs R times and each
figure is the median per turn (the CPU is often shared).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image

from benchmarks.timing import PeakMemory
from skingpt4.chat import ChatEngine, DecodingConfig
from skingpt4.chat.build import build_engine, read_chat_config
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

FOLLOW_UPS = ["Is it contagious?", "How long will it last?", "Should I see a doctor soon?", "Can I use a cream?",
              "What should I avoid?", "Could it be something else?"]
QUESTIONS = list(CLINICAL_PROMPTS) + FOLLOW_UPS  # 10 turns


class ForwardClock:
    """Records when each forward pass of the LLM ends (wraps the instance's forward)."""

    def __init__(self, llm: torch.nn.Module, device: torch.device):
        self.ends: list[float] = []
        inner = llm.forward

        def timed(*args, **kwargs):
            out = inner(*args, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.ends.append(time.perf_counter())
            return out

        llm.forward = timed


def cache_mib(conv) -> float:
    if conv.cache is None:
        return 0.0
    return sum(t.numel() * t.element_size() for layer in conv.cache.layers if layer.is_initialized
               for t in (layer.keys, layer.values)) / 2**20


def photos(n: int) -> list[Image.Image]:
    out = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), (200 - 10 * i, 140, 120 + 8 * i))
        img.paste((110, 50 + 5 * i, 40), (100 + 4 * i, 80, 190, 150))
        out.append(img)
    return out


def run_turns(engine: ChatEngine, batch: int, decoding: DecodingConfig, clock: ForwardClock) -> list[dict]:
    device = engine.model.device
    convs = [engine.new_conversation(img) for img in photos(batch)]
    rows = []
    for turn, question in enumerate(QUESTIONS, 1):
        clock.ends.clear()
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            if batch == 1:
                engine.ask(convs[0], question, decoding)
            else:
                engine.ask_batch(convs, [question] * batch, decoding)
        reports = [c.last_turn for c in convs]
        steps = len(clock.ends) - 1  # forward passes after the prefill
        decode_s = clock.ends[-1] - clock.ends[0]
        rows.append({
            "turn": turn,
            "prompt": statistics.mean(r.prompt_tokens for r in reports),
            "reused": statistics.mean(r.reused_tokens for r in reports),
            "new": statistics.mean(r.new_tokens for r in reports),
            "ttft_ms": (clock.ends[0] - start) * 1000,
            "decode_tok_s": steps / decode_s if steps else float("nan"),  # per sequence
            "peak_mib": memory.peak_mib,
            "kv_mib": cache_mib(convs[0]),
            "dropped": max(r.dropped_turns for r in reports),
        })
    return rows


def print_table(title: str, rows: list[dict], batch: int) -> None:
    print(f"\n{title}")
    print("turn  prompt  reused  new  TTFT ms  decode tok/s/seq  decode tok/s total  peak MiB  KV cache MiB  "
          "dropped turns")
    for r in rows:
        print(f"{r['turn']:>4}  {r['prompt']:>6.0f}  {r['reused']:>6.0f}  {r['new']:>3.0f}  {r['ttft_ms']:>7.1f}  "
              f"{r['decode_tok_s']:>16.1f}  {r['decode_tok_s'] * batch:>18.1f}  {r['peak_mib']:>8.0f}  "
              f"{r['kv_mib']:>12.2f}  {r['dropped']:>13}")
    first, last = rows[0], rows[-1]
    print(f"turn 10 / turn 1: TTFT x{last['ttft_ms'] / first['ttft_ms']:.2f}, "
          f"decode speed x{last['decode_tok_s'] / first['decode_tok_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", default="eval_configs/skingpt4_tiny.yaml")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides model.device)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--kv-cache", choices=["dynamic", "static"], help="override run.kv_cache")
    parser.add_argument("--compile", action="store_true", help="run.compile_decoding (needs --kv-cache static)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg, run = read_chat_config(args.cfg_path, device=args.device)
    if args.kv_cache:
        run.kv_cache = args.kv_cache
    run.compile_decoding = run.compile_decoding or args.compile
    engine = build_engine(cfg, run)
    model = engine.model
    decoding = DecodingConfig(do_sample=False, max_new_tokens=args.max_new_tokens, max_length=100_000)
    clock = ForwardClock(model.llm, model.device)
    print(f"device {model.device}, LLM {model.llm_dtype}, hidden {model.llm.config.hidden_size}, "
          f"{model.llm.config.num_hidden_layers} layers; torch threads {torch.get_num_threads()}; greedy, "
          f"at most {args.max_new_tokens} new tokens per turn; kv_cache {run.kv_cache}, "
          f"compile {run.compile_decoding}")
    run_turns(engine, 1, DecodingConfig(do_sample=False, max_new_tokens=4), clock)  # warm-up
    for batch in args.batch:
        runs = [run_turns(engine, batch, decoding, clock) for _ in range(args.repeats)]
        medians = [{key: statistics.median(run[turn][key] for run in runs) for key in runs[0][turn]}
                   for turn in range(len(QUESTIONS))]
        print_table(f"batch {batch}" + (" (ask)" if batch == 1 else " (ask_batch)") +
                    f", median of {args.repeats} run(s)", medians, batch)


if __name__ == "__main__":
    main()
