"""Training throughput of the tiny SkinGPT-4: samples/s, peak memory, and where the time goes (data loading,
frozen vision encoding = ViT + Q-Former, LLM forward/backward incl. the projection, optimiser step), with and
without the frozen-feature cache (`run.cache_frozen_features`, eval transform).

    python -m benchmarks.bench_train                       # tiny model, CPU
    python -m benchmarks.bench_train --steps 40 --batch-size 4 --device cuda
    python -m benchmarks.bench_train --pack --optimizer-impl fused    # packed batches, fused AdamW

It times the training components themselves (data plan + DataLoader, the recipe's TrainStep, AdamW) with the
acceptance run's step timer (benchmarks/acceptance/train.py). The tiny model's figures measure the pipeline's
overheads, not the full-size model's speed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.acceptance.train import measure_training
from skingpt4.models import build_model


def ensure_inputs(work: Path, data: Path | None) -> Path:
    if not os.environ.get("SKINGPT4_TINY_ASSETS"):
        assets = work / "tiny_assets"
        subprocess.run([sys.executable, "-m", "skingpt4.tiny", "--out", str(assets), "--random", "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        os.environ["SKINGPT4_TINY_ASSETS"] = str(assets)
    if data is None:
        subprocess.run([sys.executable, "-m", "data_prep.make_synthetic", "--out", str(work / "synthetic"),
                        "--no-stats"], check=True, stdout=subprocess.DEVNULL)
        data = work / "synthetic" / "prepared" / "skincon"
    return data


def measure(args, data: Path, transform: str, cache: bool) -> dict:
    torch.manual_seed(0)
    model = build_model({"variant": "tiny", "attn_implementation": args.attn_implementation}, device=args.device)
    return measure_training(model, data, batch=args.batch_size, cached=cache, transform=transform,
                            pack_tokens=args.pack_tokens if args.pack else 0, optimizer_impl=args.optimizer_impl,
                            precision="fp32", steps=args.steps, warmup=args.warmup, num_workers=args.num_workers,
                            vit_flops=0.0)


def report(name: str, r: dict) -> None:
    split = ", ".join(f"{k} {100 * v / r['step_ms']:.0f}%" for k, v in r["split_ms"].items())
    extra = f"; cache built once in {r['cache_build_s']:.2f} s for {r['items']} images" if r["cache_build_s"] else ""
    print(f"{name:<38} {r['samples_per_s']:7.1f} samples/s  peak {r['peak_mib']:7.0f} MiB  [{split}]{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a prepared SKINCON folder (default: generate one)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pack", action="store_true", help="run.pack_sequences: packed batches")
    parser.add_argument("--pack-tokens", type=int, default=512, help="run.pack_max_tokens")
    parser.add_argument("--optimizer-impl", default="auto", choices=["auto", "fused", "foreach", "for_loop"])
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = ensure_inputs(Path(tmp), args.data)
        print(f"tiny SkinGPT-4 training step, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
              f"warm-up, device {args.device}, {torch.get_num_threads()} threads, num_workers {args.num_workers}, "
              f"packed {args.pack} ({args.pack_tokens}), AdamW {args.optimizer_impl}, {args.attn_implementation}")
        print("(peak memory: the process's resident set on CPU (includes Python/torch), max allocated on CUDA)")
        runs = {
            "train transform, pixels": measure(args, data, "blip2_image_train", cache=False),
            "eval transform, pixels": measure(args, data, "blip2_image_eval", cache=False),
            "eval transform, cached features": measure(args, data, "blip2_image_eval", cache=True),
        }
        for name, result in runs.items():
            report(name, result)
        cached, pixels = runs["eval transform, cached features"], runs["eval transform, pixels"]
        speedup = cached["samples_per_s"] / pixels["samples_per_s"]
        print(f"frozen-feature cache speed-up (same eval transform): x{speedup:.2f}")


if __name__ == "__main__":
    main()
