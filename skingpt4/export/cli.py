"""Write a trained SkinGPT-4 for serving or for transformers (docs/scaling.md, "Export").

    python -m skingpt4.export --cfg-path eval_configs/skingpt4_llama2_13bchat.yaml --out exports/skingpt4-13b
    python -m skingpt4.export --cfg-path ... --out DIR --target vllm     # what vLLM serves exactly (prompt embeddings)
    python -m skingpt4.export --cfg-path ... --out DIR --merge          # LoRA adapters folded into the LLM
    python -m skingpt4.export --cfg-path ... --out DIR --dtype bf16 --options model.ckpt=output/step2/checkpoint_last.pth

The model is built from the config's `model:` block exactly as the chat CLI builds it (weights from local paths,
projection and LoRA adapters from `model.ckpt`). `--target blip2` (the default) writes a transformers
`Blip2ForConditionalGeneration` directory; `--target vllm` writes DIR/llm (the plain LLM, served with
`vllm serve DIR/llm --enable-prompt-embeds ...`, the command is in DIR/skingpt4_export.json) and the client file
that `python -m skingpt4.chat.remote --server URL --export-dir DIR` computes the prompt embeddings with.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from skingpt4.common.config import ConfigError, load_config

TARGETS = ("blip2", "vllm")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skingpt4.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config YAML with a model: block (see eval_configs/)")
    parser.add_argument("--out", required=True, help="a new (or empty) directory for the export")
    parser.add_argument("--target", choices=TARGETS, default="blip2",
                        help="blip2: a transformers BLIP-2 directory; vllm: the LLM vLLM serves + the client side")
    parser.add_argument("--merge", action="store_true", help="fold LoRA adapters (model.lora) into the LLM weights")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="weights' dtype (default: the LLM's)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N to build the model on (overrides model.device)")
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    out = Path(args.out).expanduser()
    created = not out.exists()
    try:
        from skingpt4.export.blip2 import check_out_dir, export_blip2
        from skingpt4.export.vllm import export_vllm
        from skingpt4.models.build import build_model, model_config

        cfg = load_config(args.cfg_path, args.options)
        if cfg.get("model") is None:
            raise ConfigError(f"config '{args.cfg_path}' has no 'model:' section (see eval_configs/ for examples)")
        checked = model_config(cfg.model)  # cheap checks before the (minutes-long) build
        if checked.lora.r and not args.merge:
            raise ConfigError("model.lora is set: an export has no place for LoRA adapters; pass --merge to fold "
                              "them into the LLM weights")
        check_out_dir(out)
        model = build_model(cfg.model, device=args.device)
        from skingpt4.common.fingerprint import sha256_file

        source = {"config": str(args.cfg_path), "config_sha256": sha256_file(args.cfg_path)}
        write = export_vllm if args.target == "vllm" else export_blip2
        report = write(model, out, merge=args.merge, dtype=args.dtype, source=source)
    except ConfigError as err:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the probe's empty directory: nothing was exported
        print(f"error: {err}", file=sys.stderr)
        return 2
    merged = f", {report.merged_lora_layers} LoRA layers merged" if report.merged_lora_layers else ""
    if args.target == "vllm":
        print(f"exported for vLLM to {report.out_dir} (vocabulary {report.vocab_size}, {report.dtype}{merged}); "
              f"serve it with the serve_command in {report.out_dir}/skingpt4_export.json")
    else:
        print(f"exported to {report.out_dir} (<image> token id {report.image_token_id}, vocabulary "
              f"{report.vocab_size}, {report.dtype}{merged})")
    return 0
