"""Training throughput of the tiny SkinGPT-4: samples/s, peak memory, and where the time goes (data loading,
frozen vision encoding = ViT + Q-Former, LLM forward/backward incl. the projection, optimiser step), with and
without the frozen-feature cache (`run.cache_frozen_features`, eval transform).

    python benchmarks/bench_train.py                       # tiny model, CPU
    python benchmarks/bench_train.py --steps 40 --batch-size 4 --device cuda
    python benchmarks/bench_train.py --pack --optimizer-impl fused    # packed batches, fused AdamW

It uses the training components themselves (data plan + DataLoader, the recipe's TrainStep, AdamW), timing each
phase with the device synchronised. The tiny model's figures measure the pipeline's overheads, not the
full-size model's speed.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from skingpt4.runners import DistInfo, build_run_config  # noqa: E402
from skingpt4.runners.data import build_train_loader  # noqa: E402
from skingpt4.runners.optim import build_optimizer  # noqa: E402
from skingpt4.runners.runner import to_device  # noqa: E402
from skingpt4.runners.recipe import TrainStep  # noqa: E402
from skingpt4.datasets import build_datasets, collate  # noqa: E402
from skingpt4.models import build_model  # noqa: E402
from skingpt4.prompting.prompt_files import read_prompt_lines  # noqa: E402
from skingpt4.runners.data import Source, as_sources  # noqa: E402
from skingpt4.runners.feature_cache import cache_queries  # noqa: E402


def ensure_inputs(work: Path, data: Path | None) -> Path:
    if not os.environ.get("SKINGPT4_TINY_ASSETS"):
        assets = work / "tiny_assets"
        subprocess.run([sys.executable, "-m", "skingpt4.models.tiny", "--out", str(assets), "--random",
                        "--no-progress"], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        os.environ["SKINGPT4_TINY_ASSETS"] = str(assets)
    if data is None:
        subprocess.run([sys.executable, "data_prep/make_synthetic.py", "--out", str(work / "synthetic"), "--no-stats"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        data = work / "synthetic" / "prepared" / "skincon"
    return data


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, data: Path, transform: str, cache: bool) -> dict:
    device = torch.device(args.device)
    run_cfg = build_run_config(OmegaConf.create({
        "batch_size_train": args.batch_size, "num_workers": args.num_workers, "cache_frozen_features": cache,
        "init_lr": 1e-3, "device": device.type}))
    dist = DistInfo(0, 1, 0, device)
    train_step = TrainStep(read_prompt_lines("prompts/step1.txt"), args.pack_tokens if args.pack else 0)
    torch.manual_seed(0)
    model = build_model({"variant": "tiny", "attn_implementation": args.attn_implementation}, device=str(device))
    sources = as_sources(build_datasets(OmegaConf.create(
        {"skincon_concepts": {"storage": str(data), "vis_processor": {"name": transform}}})))
    cache_start = time.perf_counter()
    if cache:
        sources = [Source(s.name, cache_queries(model, s, args.batch_size, dist), s.ratio) for s in sources]
    cache_seconds = time.perf_counter() - cache_start
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.999), args.optimizer_impl)
    total = args.warmup + args.steps
    loader = build_train_loader(sources, collate, batch_size=args.batch_size, world_size=1, rank=0, seed=0,
                                total_micro_steps=total, start_micro_step=0, num_workers=args.num_workers,
                                pin_memory=device.type == "cuda")
    model.train()
    times = {"data": 0.0, "vision": 0.0, "llm_fwd_bwd": 0.0, "optimizer": 0.0}
    samples = 0
    batches = iter(loader)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(total):
        timed = step >= args.warmup
        t0 = time.perf_counter()
        batch = to_device(next(batches)["batch"], device)
        t1 = time.perf_counter()
        if "queries" not in batch:
            batch["queries"] = model.encode_queries(batch["image"])
        sync(device)
        t2 = time.perf_counter()
        loss = train_step(model, batch)["loss"]
        loss.backward()
        sync(device)
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        t4 = time.perf_counter()
        if timed:
            for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[key] += seconds
            samples += len(batch["text_input"])
    wall = sum(times.values())
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"samples_per_s": samples / wall, "wall": wall, "times": times, "peak_mib": peak,
            "cache_seconds": cache_seconds if cache else 0.0, "items": sum(len(s.dataset) for s in sources)}


def report(name: str, r: dict) -> None:
    split = ", ".join(f"{k} {100 * v / r['wall']:.0f}%" for k, v in r["times"].items())
    extra = f"; cache built once in {r['cache_seconds']:.2f} s for {r['items']} images" if r["cache_seconds"] else ""
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
        print("(peak memory: process peak RSS on CPU (includes Python/torch), max allocated on CUDA)")
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
