"""The full-size acceptance run: every speed and memory figure of SkinGPT-4 in one command, one JSON file and a
printed table, each figure beside its target and the bound it is measured against (docs/performance.md).

    python -m benchmarks.gpu_acceptance --arch full --out $OUT        # one GPU, <= 8 minutes with model creation
    python -m benchmarks.gpu_acceptance --arch small                  # the same script on a CPU, under a minute

The model is the real architecture with random weights made directly on the device (EVA-ViT-g 39 blocks, the
Q-Former, Linear 768 -> 5120, Llama-2-13B shapes, vocabulary 32 000; `--arch small`: the tiny variant's shapes),
in the precisions the configs use (eval_configs/skingpt4_llama2_13bchat.yaml, train_configs/paper_schedule.yaml;
tiny configs for small); the tiny tokenizer gives the ids. Sections, in this order (each one's JSON is written
as soon as it is done, so a run cut short keeps what it measured; `--budget-s` skips what would not fit):

  ceilings       copy bandwidth and bf16 matmul rate (GPU), datasheet figures of the part
  encode         ViT + Q-Former encode latency at batch 1/8/32
  vit_precision  projected embeddings with the ViT in fp16 / bf16 against fp32 (error, speed)
  chat           TTFT and decode tok/s at batch 1 and 8, turn 1 (first clinical question) and turn 10, KV cache size
  train          projection-only samples/s and step split at batch 4/8/16, live images and cached features
  static         chat with the static KV cache (tokens compared with `chat`)
  optimizer      AdamW kernels (fused / foreach / for_loop) on the projection
  4bit, 8bit     chat with bitsandbytes 4-bit / 8-bit LLM weights (CUDA + bitsandbytes)
  compiled       chat with static cache + torch.compile (CUDA graphs on a GPU); GPU default, CPU with --compile
  vllm           export + vLLM serving figures, when both are available
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import re
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.acceptance import chat, common, encode, quant, targets, train
from benchmarks.timing import sync
from skingpt4.common.config import load_config
from skingpt4.models.llm import random_llm
from skingpt4.tiny.random_models import ARCHS, build_random_model, fixed_length_replies

REPO = Path(__file__).resolve().parents[1]

SECTIONS = ("ceilings", "encode", "vit_precision", "chat", "train", "static", "optimizer", "4bit", "8bit",
            "compiled", "vllm")
SEED = 0  # the random LLM is made right after seeding, so a remade one has the same weights (same tokens)
# Rough seconds per section on one H100/H200 (full) and on a 2-core CPU (small), for --budget-s.
COST = {"full": {"ceilings": 5, "encode": 15, "vit_precision": 15, "chat": 30, "train": 60, "static": 30,
                 "optimizer": 5, "4bit": 60, "8bit": 70, "compiled": 130, "vllm": 300},
        "small": {"ceilings": 0, "encode": 2, "vit_precision": 2, "chat": 6, "train": 15, "static": 6,
                  "optimizer": 1, "compiled": 40, "8bit": 0, "4bit": 0, "vllm": 0}}
CONFIGS = {"full": ("eval_configs/skingpt4_llama2_13bchat.yaml", "train_configs/paper_schedule.yaml"),
           "small": ("eval_configs/skingpt4_tiny.yaml", "train_configs/tiny.yaml")}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="small")
    parser.add_argument("--device", help="default: cuda for --arch full, cpu for --arch small")
    parser.add_argument("--out", type=Path, default=REPO / "output" / "acceptance", help="folder for the JSON + table")
    parser.add_argument("--budget-s", type=float, help="skip sections that would end past this (default 450 / 60)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in any order")
    parser.add_argument("--compile", action="store_true", help="on a CPU, also run the compiled section")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--llm-precision", help="override the configs' model.llm_precision (e.g. bf16)")
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens decoded at turns 1 and 10")
    parser.add_argument("--fill-tokens", type=int, default=32, help="tokens decoded at turns 2-9")
    parser.add_argument("--encode-batches", default="1,8,32")
    parser.add_argument("--chat-batches", default="1,8")
    parser.add_argument("--train-batches", default="4,8,16")
    parser.add_argument("--train-steps", type=int, help="timed steps per training row (default 5 GPU, 4 CPU)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers for live images (default 8 GPU, 0 CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1 on a CPU: a shared machine's "
                        "cores are not ours alone, and two threads fighting other jobs run many times slower)")
    parser.add_argument("--llm-on-meta", action="store_true", help="make the LLM on the meta device (shapes only): "
                        "the vision sections of --arch full on a machine without memory for 13B")
    parser.add_argument("--quick", action="store_true", help="tiny settings for tests (few tokens, steps, batches)")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if args.arch == "full" else "cpu")
    if args.threads is None and not args.device.startswith("cuda"):
        args.threads = 1
    args.budget_s = args.budget_s or (450.0 if args.arch == "full" else 60.0)
    if args.quick:
        args.max_new_tokens, args.fill_tokens = 8, 4
        args.encode_batches, args.chat_batches, args.train_batches = "1,2", "1,2", "2,4"
        args.train_steps = args.train_steps or 2
    args.train_steps = args.train_steps or (5 if args.device.startswith("cuda") else 4)
    args.num_workers = args.num_workers if args.num_workers is not None else (8 if args.device.startswith("cuda")
                                                                              else 0)
    if args.llm_on_meta:
        args.sections = ",".join(s for s in args.sections.split(",") if s in ("ceilings", "encode", "vit_precision"))
    unknown = sorted(set(args.sections.split(",")) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def config_precisions(arch: str, llm_override):
    """The model precisions of the eval config and the training precision of the train config."""
    eval_cfg, train_cfg = (load_config(REPO / p) for p in CONFIGS[arch])
    model = {k: eval_cfg.model.get(k, "auto") for k in ("vit_precision", "qformer_precision", "llm_precision")}
    model["qformer_precision"] = eval_cfg.model.get("qformer_precision", "fp32")
    if llm_override:
        model["llm_precision"] = llm_override
    return model, train_cfg.run.precision


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Run:
    """The result dict, written after every section; sections skip themselves when the budget is spent."""

    def __init__(self, args):
        self.args, self.started, self.interrupted = args, time.perf_counter(), False
        self.device = torch.device(args.device)
        _, _, name = common.datasheet(self.device)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "cpu"
        self.stem = f"{slug}_{args.arch}_{dt.date.today().isoformat()}"
        args.out.mkdir(parents=True, exist_ok=True)
        self.path = args.out / f"{self.stem}.json"
        self.result = {"meta": {"arch": args.arch, "device": str(self.device), "device_name": name,
                                "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
                                "versions": common.versions(), "threads": torch.get_num_threads(),
                                "budget_s": args.budget_s, "args": {k: str(v) for k, v in vars(args).items()}},
                       "skipped": {}, "errors": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def wanted(self, section: str) -> bool:
        if section not in self.args.sections.split(","):
            return False
        if self.interrupted:
            self.result["skipped"][section] = "the run was interrupted (SIGINT: Ctrl-C or the time limit)"
            return False
        cost = COST[self.args.arch][section]
        if self.elapsed() + cost > self.args.budget_s:
            self.result["skipped"][section] = f"time budget: {self.elapsed():.0f} s used, ~{cost} s needed, " \
                                              f"budget {self.args.budget_s:.0f} s"
            return False
        return True

    def section(self, name: str, fn) -> None:
        if not self.wanted(name):
            return
        start = time.perf_counter()
        print(f"[{self.elapsed():6.1f} s] {name} ...", flush=True)
        try:
            fn()
        except KeyboardInterrupt:  # `timeout --signal=INT` in scripts/gpu_acceptance.sh: keep what was measured
            self.interrupted = True
            self.result["errors"][name] = "interrupted (SIGINT: Ctrl-C or the time limit)"
        except Exception as err:  # keep the other figures of a GPU run
            traceback.print_exc()
            self.result["errors"][name] = f"{type(err).__name__}: {err}"
        self.result.setdefault("section_s", {})[name] = time.perf_counter() - start
        self.write()

    def skip(self, name: str, reason: str) -> None:
        self.result["skipped"][name] = reason

    def write(self) -> None:
        self.result["meta"]["wall_s"] = self.elapsed()
        self.result["checks"] = targets.checks(self.result)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, self.path)
        self.path.with_suffix(".md").write_text(report_markdown(self.result, targets.format_table(
            self.result["checks"])))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run(args)
    res, device = run.result, run.device
    model_precisions, train_precision = config_precisions(args.arch, args.llm_precision)
    res["meta"].update(model_precisions=model_precisions, train_precision=train_precision,
                       attn_implementation=args.attn_implementation)
    overrides = {**model_precisions, "attn_implementation": args.attn_implementation}
    tokenizer_dir = tempfile.mkdtemp(prefix="skingpt4_acceptance_")
    print(f"# SkinGPT-4 acceptance: arch {args.arch}, {res['meta']['device_name']} ({device}), "
          f"{model_precisions}, train {train_precision}; JSON -> {run.path}", flush=True)

    start = time.perf_counter()
    torch.manual_seed(SEED)
    model = build_random_model(args.arch, str(device), overrides, tokenizer_dir, llm_on_meta=args.llm_on_meta)
    sync(device)
    suppressed = fixed_length_replies(model)
    llm_bytes = sum(p.numel() * p.element_size() for p in model.llm.parameters())
    embed = model.llm.get_input_embeddings().weight
    res["model"] = {"build_s": time.perf_counter() - start, "parameters": model.parameter_counts(),
                    "llm_weight_bytes": llm_bytes,
                    "llm_weight_bytes_read": llm_bytes - embed.numel() * embed.element_size(),
                    "kv_bytes_per_token": chat.kv_bytes_per_token(model.llm), "suppressed_ids": len(suppressed),
                    "dtypes": {"vit": str(model.vit_dtype), "qformer": str(model.qformer_dtype),
                               "llm": str(model.llm_dtype)}}
    run.write()
    repeats = 10 if device.type == "cuda" else 3
    decode = dict(max_new_tokens=args.max_new_tokens, fill_tokens=args.fill_tokens)

    def ceilings():
        bandwidth, flops, _ = common.datasheet(device)
        res["ceilings"] = {"datasheet_bytes_per_s": bandwidth, "datasheet_bf16_flops": flops,
                           **common.measure_ceilings(device)}

    llm_kind = {"now": "16bit"}

    def remake_llm() -> None:
        """A fresh 16-bit random LLM with the first one's weights (quantization replaced them in place)."""
        model.llm = None
        gc.collect()
        torch.cuda.empty_cache()
        torch.manual_seed(SEED)
        model.llm = random_llm(ARCHS[args.arch][1], model.tokenizer, model.llm_dtype, device,
                               args.attn_implementation)
        fixed_length_replies(model)
        llm_kind["now"] = "16bit"

    def chat_section(variant: str):
        def go():
            if llm_kind["now"] != "16bit":
                remake_llm()
            rows = chat.chat_variant(model, variant, ints(args.chat_batches), compile_backend=args.compile_backend,
                                     **decode)
            reference = [r for r in res.get("chat", []) if r["variant"] == "dynamic"]
            if variant in ("static", "compiled") and reference:
                res.setdefault("tokens_identical", {})[variant] = chat.same_tokens(rows, reference)
                res.setdefault("first_difference", {})[variant] = chat.first_difference(rows, reference)
            res["chat"] = res.get("chat", []) + rows
        return go

    def train_section():
        """The grid with the default settings (padded), then packed rows (run.pack_sequences) at the largest
        batch with cached features; the projection is restored afterwards (later sections compare tokens)."""
        data = train.write_training_folder(Path(tokenizer_dir) / "train_data", model.tokenizer)
        saved = model.trainable_state_dict()
        kw = dict(optimizer_impl="auto", precision=train_precision, steps=args.train_steps, warmup=2,
                  num_workers=args.num_workers, vit_flops=encode.vit_flops_per_image(model))
        rows, batches = [], ints(args.train_batches)
        try:
            for cached in (False, True):
                for batch in batches:
                    rows.append(train.measure_training(model, data, batch=batch, cached=cached, pack_tokens=0, **kw))
                    res["train"] = rows
                    run.write()
            for capacity in (512, 2048):
                rows.append(train.measure_training(model, data, batch=batches[-1], cached=True, pack_tokens=capacity,
                                                   **kw))
        finally:
            res["train"] = rows
            model.load_trainable_state_dict(saved, "the projection before the training section")

    def quant_section(mode: str):
        def go():
            reason = quant.bitsandbytes_missing(device)
            if reason:
                run.skip(mode, reason)
                return
            if llm_kind["now"] != "16bit":
                remake_llm()
            quant.quantize_llm_(model.llm, mode)
            llm_kind["now"] = mode
            res.setdefault("quantized_weight_bytes", {})[mode] = quant.weight_bytes(model.llm)
            res["chat"] = res.get("chat", []) + chat.chat_variant(model, mode, ints(args.chat_batches), **decode)
        return go

    def vllm_section():
        """The exact serving path on a real vLLM (its own environment: SKINGPT4_VLLM or `vllm` on PATH): this
        model exported with --target vllm, `vllm serve DIR/llm --enable-prompt-embeds`, then bench_serve's load
        (throughput, p50/p95 latency, TTFT) and the share of greedy tokens equal to the local engine's."""
        import shutil

        vllm = os.environ.get("SKINGPT4_VLLM") or shutil.which("vllm")
        if device.type != "cuda" or not vllm:
            run.skip("vllm", "needs a CUDA GPU and vLLM in its own environment (SKINGPT4_VLLM=.venv-vllm/bin/vllm): "
                     + ", ".join(w for w, ok in (("no CUDA", device.type == "cuda"), ("no vllm", vllm)) if not ok))
            return
        from benchmarks.bench_serve import measure
        from skingpt4.chat import ChatEngine, DecodingConfig
        from skingpt4.chat.http_client import ServerAddress, ServerError, StrictClient
        from skingpt4.chat.remote_engine import RemoteChatEngine
        from skingpt4.export.vllm import export_vllm
        from skingpt4.prompting.clinical import CLINICAL_PROMPTS

        if llm_kind["now"] != "16bit":  # a quantized LLM cannot be exported: the 16-bit one with the same weights
            remake_llm()
        with tempfile.TemporaryDirectory() as tmp:
            export = Path(tmp) / "export"
            export_vllm(model, export)
            info = json.loads((export / "skingpt4_export.json").read_text())
            port, log_path = "8791", Path(tmp) / "vllm.log"
            command = [vllm, *info["serve_command"][1:], "--port", port, "--gpu-memory-utilization", "0.45",
                       "--max-model-len", "2048"]
            with open(log_path, "w") as log_file:
                server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                          env={**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"})
            url = f"http://127.0.0.1:{port}/v1"
            try:
                started = time.time()
                while True:
                    if server.poll() is not None:
                        raise RuntimeError("vllm serve exited: " + " ".join(log_path.read_text().split()[-60:]))
                    try:
                        StrictClient(ServerAddress.parse(url), timeout=2).get("/models")
                        break
                    except ServerError:
                        if time.time() - started > 600:
                            raise RuntimeError("vllm serve did not come up within 600 s")
                        time.sleep(2)
                engine = RemoteChatEngine.from_export(export, url, device=str(device), concurrency=32)
                greedy = DecodingConfig(do_sample=False, max_new_tokens=32)
                local, remote = ChatEngine(model), engine
                image = torch.rand(3, model.cfg.vision.image_size, model.cfg.vision.image_size)
                lc, rc = local.new_conversation(image), remote.new_conversation(image)
                agree = total = 0
                for question in CLINICAL_PROMPTS[:2]:
                    local.ask(lc, question, greedy)
                    remote.ask(rc, question, greedy)
                    a, b = lc.last_turn.reply_ids, rc.last_turn.reply_ids
                    agree += sum(x == y for x, y in zip(a, b))
                    total += max(len(a), len(b))
                res["vllm"] = {"startup_s": round(time.time() - started, 1), "served_model": info["served_model_name"],
                               "greedy_tokens_equal_local": f"{agree}/{total}",
                               "load": measure(engine, conversations=64, concurrency=32, turns=2, max_new_tokens=64)}
            finally:
                server.terminate()
                try:
                    server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()

    run.section("ceilings", ceilings)
    run.section("encode", lambda: res.__setitem__("encode", encode.measure_encode(model, ints(args.encode_batches),
                                                                                   repeats)))
    run.section("vit_precision", lambda: res.__setitem__("vit_precision", encode.vit_precision_effect(
        model, batch=min(8, max(ints(args.encode_batches))), repeats=repeats)))
    run.section("chat", chat_section("dynamic"))
    run.section("train", train_section)
    run.section("static", chat_section("static"))
    run.section("optimizer", lambda: res.__setitem__("optimizer", train.optimizer_kernels(model, repeats=20)))
    run.section("4bit", quant_section("4bit"))
    run.section("8bit", quant_section("8bit"))
    if device.type == "cuda" or args.compile:
        run.section("compiled", chat_section("compiled"))
    else:
        run.skip("compiled", "CPU: compiling takes ~20-40 s here; add --compile to include it")
    run.section("vllm", vllm_section)
    run.write()
    print_report(res)
    print(f"\nwrote {run.path} and {run.path.with_suffix('.md')} in {run.elapsed():.0f} s", flush=True)
    return res


def report_lines(res: dict) -> list[str]:
    """Every figure of the run, one line each (printed at the end and kept in the .md file)."""
    out = []
    for row in res.get("encode", []):
        out.append(f"encode  batch {row['batch']:>3}: {row['median_ms']:8.1f} ms  {row['images_per_s']:8.1f} img/s  "
              f"peak {row['peak_mib']:8.0f} MiB  ({row['vit_precision']} ViT)")
    effect = res.get("vit_precision", {})
    for name in ("fp16", "bf16"):
        if "rel_error" in effect.get(name, {}):
            e = effect[name]
            out.append(f"ViT {name} vs fp32: projected embeddings rel. error {e['rel_error']:.2e}, min cosine "
                  f"{e['min_cosine']:.6f}, encode {e['median_ms']:.1f} ms vs {effect['fp32']['median_ms']:.1f} ms")
    for row in res.get("chat", []):
        out.append(f"chat {row['variant']:<8} batch {row['batch']} turn {row['turn']:>2}: prompt "
              f"{row['prompt_tokens']:>4} (reused {row['reused_tokens']:>4}), TTFT {row['ttft_ms']:7.1f} ms, "
              f"{row['decode_tok_s']:7.1f} tok/s/seq ({row['decode_tok_s_total']:7.1f} total), "
              f"KV {row['kv_cache_mib']:7.1f} MiB, peak {row['peak_mib']:.0f} MiB")
    for row in res.get("train", []):
        split = " / ".join(f"{v:.1f}" for v in row["split_ms"].values())
        out.append(f"train batch {row['batch']:>2} {row['images']:<6} {row['layout']:<6}: {row['samples_per_s']:7.1f} "
              f"samples/s, step {row['step_ms']:7.1f} ms (data/vision/LLM/opt {split} ms), "
              f"{row['tokens_per_sample']:.0f} tok/sample, padding {100 * row['padding_fraction']:.0f}%, "
              f"peak {row['peak_mib']:.0f} MiB")
    for row in res.get("optimizer", []):
        out.append(f"AdamW {row['optimizer']:<8}: " + (f"{row['step_ms']:.3f} ms/step, max |diff| vs for_loop "
                                                   f"{row.get('max_abs_diff_vs_for_loop', 0):.1e}"
                                                   if "step_ms" in row else row["skipped"]))
    for key in ("tokens_identical", "first_difference", "quantized_weight_bytes", "skipped", "errors"):
        if res.get(key):
            out.append(f"{key}: {res[key]}")
    served = res.get("vllm", {})
    if "load" in served:
        load = served["load"]
        out.append(f"vLLM (prompt embeddings): {load['answers_per_s']:.2f} answers/s, {load['tokens_per_s']:.0f} tok/s at "
                   f"{load['concurrency']} in flight; latency p50 {load['latency_p50_s']:.2f} s, p95 "
                   f"{load['latency_p95_s']:.2f} s; TTFT p50 {load['ttft_p50_s']:.2f} s; greedy tokens equal to local "
                   f"{served['greedy_tokens_equal_local']}")
    return out


def print_report(res: dict) -> None:
    print("\n" + "\n".join(report_lines(res)) + "\n\n" + targets.format_table(res["checks"]), flush=True)


def report_markdown(res: dict, table: str) -> str:
    meta = res["meta"]
    lines = "\n".join(report_lines(res))
    return (f"# Acceptance run: {meta['device_name']} ({meta['arch']}), {meta['date']}, commit {meta['commit']}\n\n"
            f"versions: {meta['versions']}; precisions {meta.get('model_precisions')}, training "
            f"{meta.get('train_precision')}; {meta.get('wall_s', 0):.0f} s\n\n```\n{table}\n```\n\n"
            f"```\n{lines}\n```\n")


if __name__ == "__main__":
    main()
