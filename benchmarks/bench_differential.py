"""Differential benchmark: scoring every class (16 answers, one batched pass that reuses the prompt's KV cache)
against generating one greedy answer to the same diagnosis question, side by side on the same images.

    python -m benchmarks.bench_differential                       # tiny model, CPU
    python -m benchmarks.bench_differential --max-new-tokens 300  # the original's reply length
    python -m benchmarks.bench_differential --cfg-path eval_configs/skingpt4_llama2_13bchat.yaml --device cuda:0

Prints the median seconds of each and their ratio (target: scoring < 1x one greedy answer). The two are timed
alternately, image by image, so that a busy machine slows both alike.
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
from skingpt4.chat.differential import DifferentialScorer, class_answers
from skingpt4.prompting.clinical import CLINICAL_PROMPTS


def build(cfg_path, device):
    from skingpt4.common.config import load_config
    from skingpt4.models import build_model

    if cfg_path:
        return build_model(load_config(cfg_path).model, device=device)
    if not os.environ.get("SKINGPT4_TINY_ASSETS"):
        from skingpt4.tiny.assets import build_tiny_assets

        os.environ["SKINGPT4_TINY_ASSETS"] = str(build_tiny_assets(Path(tempfile.mkdtemp(prefix="skingpt4_bench_"))))
    return build_model({"variant": "tiny"}, device=device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", help="eval config whose model to use (default: the tiny model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="length of the greedy answer compared")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    model = build(args.cfg_path, args.device)
    engine = ChatEngine(model)
    scorer = DifferentialScorer(model, class_answers())
    # a fixed number of new tokens: the greedy answer does the same work on every image
    greedy = DecodingConfig(do_sample=False, max_new_tokens=args.max_new_tokens)
    generator = torch.Generator().manual_seed(0)
    size = model.cfg.vision.image_size
    scoring, answering = [], []
    for i in range(args.warmup + args.images):
        conv = engine.new_conversation(torch.rand(3, size, size, generator=generator))
        with timed(model.device, scoring):
            scorer.scores(conv.image_embeds)
        with timed(model.device, answering):
            engine.ask(conv, CLINICAL_PROMPTS[0], greedy)
    scoring, answering = scoring[args.warmup:], answering[args.warmup:]
    s, a = statistics.median(scoring), statistics.median(answering)
    answers = len(scorer.answer_ids)
    tokens = sum(len(ids) for ids in scorer.answer_ids)
    print(f"device {model.device}, {args.images} images, prompt {len(scorer.prompt)} positions")
    print(f"differential: {answers} class answers ({tokens} answer tokens) in one batched pass: {s * 1000:.1f} ms")
    print(f"one greedy answer ({args.max_new_tokens} new tokens): {a * 1000:.1f} ms")
    print(f"ratio differential / greedy answer: {s / a:.2f}x (target < 1x)")


if __name__ == "__main__":
    main()
