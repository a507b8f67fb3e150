"""Serving under load: many concurrent conversations through the exact serving path (`RemoteChatEngine`: the
client lays out and embeds every turn, the server runs the LLM on the prompt embeddings; docs/scaling.md).

    python -m benchmarks.bench_serve                                     # CPU: tiny export + the fake server
    python -m benchmarks.bench_serve --server http://127.0.0.1:8000/v1 --export-dir exports/13b \
        --conversations 64 --concurrency 32 --device cuda:0              # a real vLLM (scripts/serve_vllm.sh)

Each conversation asks `--turns` clinical questions in order (every request carries the whole conversation); at
most `--concurrency` conversations are in flight. Reported: answers per second and generated tokens per second
over the wall time, p50 / p95 latency per answer, and time to first token (TTFT): the served path does not
stream, so TTFT is measured as the latency of the same first-turn request with max_tokens = 1 (prefill + one
token, client embedding and HTTP included), at the same concurrency.

Without --server it exports the tiny chat model (`--target vllm`, make tiny_assets first or set
SKINGPT4_TINY_ASSETS) and serves it with tests/fake_openai_server.py (transformers on one CPU, one request at a
time): the figures then measure the client and the protocol, not vLLM's batching.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def photos(n: int) -> list:
    from PIL import Image

    out = []
    for i in range(n):
        image = Image.new("RGB", (96, 80), (236, 192, 158))
        image.paste(((40 * i) % 255, 30 + (17 * i) % 200, 30), (20 + i % 20, 15, 60, 55))
        out.append(image)
    return out


def measure(engine, conversations: int = 32, concurrency: int = 8, turns: int = 2, max_new_tokens: int = 16) -> dict:
    """Throughput and latency of `conversations` conversations of `turns` greedy questions, `concurrency` at once."""
    from skingpt4.chat import DecodingConfig
    from skingpt4.prompting.clinical import CLINICAL_PROMPTS

    decoding = DecodingConfig(do_sample=False, max_new_tokens=max_new_tokens)
    first = DecodingConfig(do_sample=False, max_new_tokens=1)
    images = photos(conversations)
    questions = [CLINICAL_PROMPTS[t % len(CLINICAL_PROMPTS)] for t in range(turns)]
    latencies, ttft, tokens, lock = [], [], [0], threading.Lock()

    def conversation(image):
        conv = engine.new_conversation(image)
        for question in questions:
            started = time.perf_counter()
            engine.ask(conv, question, decoding)
            with lock:
                latencies.append(time.perf_counter() - started)
                tokens[0] += conv.last_turn.new_tokens

    def first_token(image):
        conv = engine.new_conversation(image)
        started = time.perf_counter()
        engine.ask(conv, questions[0], first)
        with lock:
            ttft.append(time.perf_counter() - started)

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up: one conversation
        list(pool.map(first_token, images[:1]))
    ttft.clear()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(conversation, images))
    wall = time.perf_counter() - started
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(first_token, images))
    return {"conversations": conversations, "concurrency": concurrency, "turns": turns,
            "max_new_tokens": max_new_tokens, "answers": len(latencies), "wall_s": round(wall, 3),
            "answers_per_s": round(len(latencies) / wall, 3), "generated_tokens": tokens[0],
            "tokens_per_s": round(tokens[0] / wall, 2),
            "latency_p50_s": round(percentile(latencies, 0.5), 4), "latency_p95_s": round(percentile(latencies, 0.95), 4),
            "ttft_p50_s": round(percentile(ttft, 0.5), 4), "ttft_p95_s": round(percentile(ttft, 0.95), 4),
            "mean_latency_s": round(statistics.fmean(latencies), 4)}


def fake_server(tmp: Path):
    """The tiny chat model exported for vLLM and served by the CPU stand-in: (http server, URL, export dir)."""
    sys.path.insert(0, str(REPO / "tests"))
    from fake_openai_server import FakePromptEmbedsServer

    from skingpt4.export.cli import main as export_main

    export = tmp / "tiny_vllm"
    if export_main(["--cfg-path", str(REPO / "eval_configs" / "skingpt4_tiny.yaml"), "--target", "vllm",
                    "--out", str(export)]) != 0:
        raise SystemExit("could not export the tiny model (make tiny_assets first: python -m skingpt4.tiny)")
    http, url = FakePromptEmbedsServer(export).serve()
    return http, url, export


def print_row(row: dict, where: str) -> None:
    print(f"{where}: {row['conversations']} conversations x {row['turns']} turns, {row['concurrency']} in flight: "
          f"{row['answers_per_s']:.2f} answers/s, {row['tokens_per_s']:.1f} tokens/s; latency p50 "
          f"{row['latency_p50_s'] * 1000:.0f} ms, p95 {row['latency_p95_s'] * 1000:.0f} ms; TTFT p50 "
          f"{row['ttft_p50_s'] * 1000:.0f} ms, p95 {row['ttft_p95_s'] * 1000:.0f} ms", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="a running server's API base (default: the fake server on the tiny export)")
    parser.add_argument("--export-dir", help="with --server: the --target vllm export it serves")
    parser.add_argument("--device", default="cpu", help="where the client encodes photos (default cpu)")
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    from skingpt4.chat.remote_engine import RemoteChatEngine
    from skingpt4.common.config import ConfigError

    with tempfile.TemporaryDirectory() as tmp:
        http = None
        if args.server:
            if not args.export_dir:
                parser.error("--server needs --export-dir")
            url, export, where = args.server, Path(args.export_dir), args.server
        else:
            http, url, export = fake_server(Path(tmp))
            where = "fake server (CPU)"
        try:
            rows = []
            for concurrency in args.concurrency:
                engine = RemoteChatEngine.from_export(export, url, device=args.device, concurrency=concurrency)
                rows.append(measure(engine, args.conversations, concurrency, args.turns, args.max_new_tokens))
                print_row(rows[-1], where)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        finally:
            if http is not None:
                http.shutdown()
                http.server_close()
    if args.json:
        Path(args.json).write_text(json.dumps({"server": where, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
