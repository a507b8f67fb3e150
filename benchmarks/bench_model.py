"""Model benchmark: parameters per part, build/load time, image-encode latency and peak memory.

    python -m benchmarks.bench_model                       # tiny config on CPU (builds tiny assets in a temp dir)
    python -m benchmarks.bench_model --arch full --device cuda --dtype bf16   # full-size, random weights (GPU)
    python -m benchmarks.bench_model --arch full --device cpu --dtype bf16 --skip-llm   # ViT-g + Q-Former on CPU

`--arch tiny` goes through the real loading path (build_model on the tiny files). `--arch full` builds the
full-size architecture (EVA-ViT-g 39 blocks, Q-Former, Llama-2-13b-chat shapes) with random weights, no files
needed; with --skip-llm the 13B LLM is built on the meta device (counted, not run), which fits a CPU machine.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.timing import timed
from skingpt4.common.precision import DTYPES
from skingpt4.models.eva_vit import VisionConfig, build_eva_vit
from skingpt4.models.qformer import QFormerConfig, build_qformer
from skingpt4.tiny.random_models import LLAMA2_13B


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak RSS)


def time_encode(encode, batch: int, device: torch.device, dtype: torch.dtype, repeats: int) -> list[float]:
    images = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    encode(images)  # warm-up
    times: list[float] = []
    for _ in range(repeats):
        with timed(device, times):
            encode(images)
    return times


def build_tiny(device: str, vit_precision: str = "auto", attn: str = "sdpa"):
    from skingpt4.models import build_model
    from skingpt4.tiny.assets import TinyRecipe, build_tiny_assets

    assets = Path(tempfile.mkdtemp(prefix="skingpt4_bench_"))
    build_tiny_assets(assets, recipe=TinyRecipe(pretrain=False))  # speed only: random weights build in seconds
    os.environ["SKINGPT4_TINY_ASSETS"] = str(assets)
    start = time.perf_counter()
    model = build_model({"variant": "tiny", "device": device, "vit_precision": vit_precision,
                         "attn_implementation": attn})
    build_s = time.perf_counter() - start
    return model.parameter_counts(), model.encode_image, build_s, model.device, model.vit_dtype


def build_full(device: str, dtype: torch.dtype, skip_llm: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    dev = torch.device(device)
    start = time.perf_counter()
    with torch.device(dev):
        vit = build_eva_vit(VisionConfig()).to(dtype).eval()
        vit.norm.float()
        qformer = build_qformer(QFormerConfig(), 1408).eval()
        query_tokens = torch.randn(1, 32, 768) * 0.02
        proj = torch.nn.Linear(768, LLAMA2_13B["hidden_size"])
    with torch.device("meta" if skip_llm else dev):
        llm = LlamaForCausalLM(LlamaConfig(**LLAMA2_13B, dtype=dtype)).to(dtype)
    build_s = time.perf_counter() - start
    counts = {"visual_encoder": sum(p.numel() for p in vit.parameters()),
              "qformer": sum(p.numel() for p in qformer.parameters()),
              "llama_proj": sum(p.numel() for p in proj.parameters()),
              "llm": sum(p.numel() for p in llm.parameters()), "query_tokens": query_tokens.numel()}

    @torch.no_grad()
    def encode(images):
        autocast = torch.autocast(dev.type, dtype=dtype) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
        with autocast:
            feats = vit.forward_features(images)
        q = qformer(query_embeds=query_tokens.expand(images.shape[0], -1, -1), encoder_hidden_states=feats.float(),
                    encoder_attention_mask=torch.ones(feats.shape[:2], dtype=torch.long, device=dev))
        return proj(q.last_hidden_state)

    return counts, encode, build_s, dev, dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="full arch: all parts; tiny: the ViT")
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"], help="tiny arch")
    parser.add_argument("--skip-llm", action="store_true", help="full arch: build the LLM on the meta device")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.arch == "tiny":
        counts, encode, build_s, device, dtype = build_tiny(args.device, args.dtype, args.attn_implementation)
    else:
        counts, encode, build_s, device, dtype = build_full(args.device, DTYPES[args.dtype], args.skip_llm)

    print(f"# SkinGPT-4 model benchmark: arch={args.arch} device={device} dtype={str(dtype).replace('torch.', '')} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print("part            parameters")
    for name, n in counts.items():
        print(f"{name:<15} {n:>14,}")
    print(f"{'total':<15} {sum(counts.values()):>14,}")
    print(f"build/load time: {build_s:.2f} s")
    print("batch  encode median (ms)  min (ms)  images/s")
    for batch in (int(b) for b in args.batches.split(",")):
        times = time_encode(encode, batch, device, dtype if args.arch == "full" else torch.float32, args.repeats)
        med = statistics.median(times)
        print(f"{batch:>5}  {med * 1e3:>18.1f}  {min(times) * 1e3:>8.1f}  {batch / med:>8.1f}")
    print(f"peak memory: {peak_memory_gib(device):.2f} GiB ({'CUDA allocated' if device.type == 'cuda' else 'process RSS'})")


if __name__ == "__main__":
    main()
