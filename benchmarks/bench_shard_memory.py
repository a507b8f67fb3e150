"""Peak memory per process of loading a sharded LLM (run.sharding=fsdp, docs/scaling.md "Sharded training"), on CPU
with gloo: 1 process vs N, two ways of loading.

    python -m benchmarks.bench_shard_memory                          # a random 166M-parameter Llama (fp32, 0.67 GB)
    python -m benchmarks.bench_shard_memory --ranks 1 2 4 --layers 12

  replica  every process loads the whole LLM (`load_llm`), then FSDP2 shards it: the peak is a full replica
  meta     the LLM is built on the meta device (`load_llm_on_meta`) and each process reads only its shard of every
           weight from the safetensors files (`runners/sharding.load_llm_shards`): what training does

Each process reports, less what it held before the LLM was touched (torch and the process group loaded): its peak
resident set (ru_maxrss, which counts the safetensors pages it maps) and its peak anonymous memory (what it
allocated itself, sampled every 2 ms; on a GPU this is the part that lands in device memory). It also checks that
its shards hold the file's values.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

MODES = ("replica", "meta")


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak:
    """The peak of the process's anonymous (private, not file-backed) resident memory, sampled every 2 ms: what
    the process itself allocated. File pages that safetensors maps are counted in RSS but are the page cache's."""

    def __init__(self):
        import threading

        self.peak, self._stop = status_mb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, status_mb("RssAnon"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_mb("RssAnon"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_llm(folder: Path, hidden: int, layers: int, vocab: int) -> int:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 64), vocab_size=vocab, max_position_embeddings=512)
    torch.manual_seed(0)
    llm = LlamaForCausalLM(config)
    llm.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in llm.parameters())


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def worker(folder: str, mode: str, dtype_name: str = "fp32") -> None:
    import torch.distributed as dist
    from torch import nn

    from skingpt4.models.llm import load_llm, load_llm_on_meta
    from skingpt4.runners.distributed import init_distributed
    from skingpt4.runners.sharding import shard_model

    torch.set_num_threads(1)
    info = init_distributed("cpu", "gloo")
    if not dist.is_initialized():  # one process: a group of one, so that fully_shard runs the same way
        dist.init_process_group("gloo", rank=0, world_size=1)
    dist.barrier()
    before, anon_before = status_mb("VmRSS"), status_mb("RssAnon")

    class Holder(nn.Module):  # shard_model's view of SkinGPT-4: the LLM (+ a vision encoder without blocks)
        def __init__(self, llm):
            super().__init__()
            self.llm, self.visual_encoder = llm, nn.Module()

    with AnonPeak() as anon:
        if mode == "replica":
            llm = load_llm(folder, DTYPES[dtype_name], torch.device("cpu"))
        else:
            llm = load_llm_on_meta(folder, DTYPES[dtype_name])
        model = Holder(llm)
        shard_model(model, info)
        dist.barrier()
    peak = peak_rss_mb()
    # the shards hold the file's values: gather two weights and compare
    from safetensors import safe_open

    with safe_open(str(Path(folder) / "model.safetensors"), framework="pt") as f:
        ok = all(torch.equal(dict(model.named_parameters())[f"llm.{key}"].full_tensor(),
                             f.get_tensor(key).to(DTYPES[dtype_name]))
                 for key in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"))
    print(json.dumps({"rank": info.rank, "before_mb": round(before, 1), "peak_mb": round(peak, 1),
                      "added_mb": round(peak - before, 1),
                      "anon_added_mb": round(anon.peak - anon_before, 1), "weights_equal_file": ok}), flush=True)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(folder: Path, ranks: int, mode: str, dtype: str = "fp32") -> list[dict]:
    port = free_port()
    procs = []
    for rank in range(ranks):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.bench_shard_memory", "--worker",
                                       str(folder), mode, dtype], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed ({mode}, {ranks} ranks): {err.strip().splitlines()[-1:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="the dtype the LLM is loaded in (the file is fp32): bf16 makes the replica a copy")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--worker", nargs=3, metavar=("FOLDER", "MODE", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llm"
        n = make_llm(folder, args.hidden, args.layers, args.vocab)
        size_mb = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
        print(f"LLM: {n / 1e6:.0f}M parameters, {size_mb:.0f} MB of fp32 safetensors; peak memory added per "
              "process while loading and sharding (max over ranks), MB:")
        rows = []
        for mode in args.modes:
            for ranks in args.ranks:
                results = run(folder, ranks, mode, args.dtype)
                rows.append({"mode": mode, "ranks": ranks, "dtype": args.dtype, "added_mb": max(r["added_mb"] for r in results),
                             "anon_added_mb": max(r["anon_added_mb"] for r in results),
                             "peak_mb": max(r["peak_mb"] for r in results),
                             "weights_equal_file": all(r["weights_equal_file"] for r in results)})
                row = rows[-1]
                print(f"  {mode:8s} {ranks} rank(s): RSS +{row['added_mb']:7.1f}  anonymous +{row['anon_added_mb']:7.1f}"
                      f"  (shards equal the file: {row['weights_equal_file']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"llm_parameters": n, "llm_file_mb": size_mb, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
