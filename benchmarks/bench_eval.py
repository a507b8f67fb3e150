"""Evaluation benchmark: cases per minute of the clinical sessions (four prompts in one conversation per
case), batched across cases with `ChatEngine.ask_batch` versus one case at a time.

    python -m benchmarks.bench_eval                                   # tiny model, synthetic cases, CPU
    python -m benchmarks.bench_eval --cases 40 --batch-sizes 1 4 8 16 --max-new-tokens 32
    python -m benchmarks.bench_eval --cfg-path eval_configs/skingpt4_llama2_13bchat.yaml --images my_cases/

Without --cfg-path the tiny random-weight model is used (assets from $SKINGPT4_TINY_ASSETS or built into a
temp dir) and the images are the synthetic generator's Dermnet test images. Decoding is greedy with a fixed
number of new tokens per answer (`--max-new-tokens`; the tiny model never stops early on its own either
way), so every batch size does the same work.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.timing import timed
from skingpt4.chat import ChatEngine, DecodingConfig
from skingpt4.evaluation.cases import load_cases
from skingpt4.prompting.clinical import CLINICAL_PROMPTS
from skingpt4.evaluation.extract import ClassExtractor
from skingpt4.evaluation.sessions import run_sessions


def build_model(cfg_path):
    from skingpt4.common.config import load_config
    from skingpt4.models import build_model

    if cfg_path:
        return build_model(load_config(cfg_path).model)
    if not os.environ.get("SKINGPT4_TINY_ASSETS"):
        from skingpt4.tiny.assets import TinyRecipe, build_tiny_assets

        recipe = TinyRecipe(pretrain=False)  # speed only: random weights build in seconds
        os.environ["SKINGPT4_TINY_ASSETS"] = str(build_tiny_assets(Path(tempfile.mkdtemp(prefix="skingpt4_bench_")),
                                                                   recipe=recipe))
    return build_model({"variant": "tiny", "device": "cpu"})


def synthetic_images(n: int) -> Path:
    from data_prep.make_synthetic import make_dermnet

    raw = Path(tempfile.mkdtemp(prefix="skingpt4_bench_cases_"))
    make_dermnet(raw, {"test": -(-n // 23)}, size=256, seed=0)  # ceil(n / 23) images in each of 23 folders
    return raw / "dermnet" / "test"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", help="eval config whose model to use (default: the tiny model)")
    parser.add_argument("--images", type=Path, help="cases: folder / CSV / prepared folder (default: synthetic)")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 24])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per batch size (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.cfg_path)
    engine = ChatEngine(model)
    cases, _ = load_cases(args.images or synthetic_images(args.cases), ClassExtractor(), limit=args.cases)
    decoding = DecodingConfig(do_sample=False, max_new_tokens=args.max_new_tokens)
    print(f"device {model.device}, torch threads {torch.get_num_threads()}, {len(cases)} cases x "
          f"{len(CLINICAL_PROMPTS)} prompts, greedy, {args.max_new_tokens} new tokens max per answer")
    run_sessions(engine, cases[:2], CLINICAL_PROMPTS[:1], decoding, batch_size=2, seed=0)  # warm-up
    baseline = None
    print(f"{'batch':>5}  {'seconds':>8}  {'cases/min':>9}  {'speed-up':>8}  {'answers':>7}")
    for batch_size in args.batch_sizes:
        times: list[float] = []
        for _ in range(args.repeats):
            with timed(model.device, times):
                sessions, problems = run_sessions(engine, cases, CLINICAL_PROMPTS, decoding, batch_size=batch_size,
                                                  seed=0)
        seconds = statistics.median(times)
        rate = 60 * len(sessions) / seconds
        baseline = baseline or rate
        answers = sum(len(s.answers) for s in sessions)
        print(f"{batch_size:>5}  {seconds:>8.2f}  {rate:>9.1f}  {rate / baseline:>7.2f}x  {answers:>7}"
              + (f"  ({len(problems)} case(s) skipped)" if problems else ""))


if __name__ == "__main__":
    main()
