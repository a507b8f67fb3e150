"""SkinGPT-4 -> a directory vLLM serves exactly (`python -m skingpt4.export --target vllm`, docs/scaling.md,
"Serving with vLLM").

vLLM's BLIP-2 puts the 32 image tokens at the start of the prompt; SkinGPT-4 reads them mid-prompt. So vLLM
serves the plain language model with prompt embeddings (`vllm serve DIR/llm --enable-prompt-embeds`) and the
client computes the whole input, `[text | image | text]`, with the project's own layout and embedding
(`skingpt4/chat/remote_engine.py`). The export therefore has two sides:

    DIR/llm/                          the LLM as a transformers directory (safetensors, config.json also readable
                                      by transformers 4.x, which vLLM pins, the source tokenizer files verbatim)
    DIR/skingpt4_client.safetensors   what the client runs: EVA-ViT + ln_vision, Q-Former, query tokens, the
                                      projection and the LLM's input embedding table
    DIR/skingpt4_export.json          the manifest: the resolved model config, the model identity, the client
                                      file's SHA-256 and the served model name (`skingpt4-<hash>`), which the
                                      client checks against the server's /v1/models before it sends anything

Refused before anything is written: a quantized LLM, LoRA adapters without `merge`, non-finite weights.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from skingpt4.common.fingerprint import sha256_file, sha256_json
from skingpt4.export.blip2 import EXPORT_INFO_FILE, ExportReport, prepare_export

log = logging.getLogger("skingpt4.export")
LLM_DIR = "llm"
CLIENT_FILE = "skingpt4_client.safetensors"
EMBEDDING_KEY = "llm_input_embeddings.weight"
# what the client keeps of the model (state-dict prefixes of SkinGPT4), beside the LLM's input embedding
CLIENT_PARTS = ("visual_encoder.", "qformer.", "query_tokens", "llama_proj.")
# tokenizer files copied from the source LLM directory as they are (what transformers 4.x wrote for Llama-2)
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")


def served_model_name(manifest: dict) -> str:
    """`skingpt4-` + 16 hex digits of a hash over what answers: the model identity, the client file and the LLM's
    config. The server is started with it (`--served-model-name`); the client refuses a server without it."""
    keys = ("model", "client_sha256", "llm_config_sha256", "template", "dtype")
    return "skingpt4-" + sha256_json({k: manifest[k] for k in keys})[:16]


def transformers4_config(config: dict, dtype: torch.dtype) -> dict:
    """config.json as transformers 4.x reads it as well as 5.x: `torch_dtype` beside `dtype`, and `rope_theta` /
    `rope_scaling` beside 5.x's `rope_parameters` (4.x ignores that key and would fall back to theta 10000)."""
    out = dict(config)
    name = str(dtype).replace("torch.", "")
    out["torch_dtype"] = out["dtype"] = name
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        out.setdefault("rope_theta", rope["rope_theta"])
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        out.setdefault("rope_scaling", None if scaling.get("rope_type", "default") == "default" else scaling)
    return out


def client_state_dict(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in model.state_dict().items() if k.startswith(CLIENT_PARTS)}
    state[EMBEDDING_KEY] = model.llm.get_input_embeddings().weight
    # vision, Q-Former and projection keep the precisions they run in; the embedding table is the LLM's
    return {k: v.detach().to("cpu", dtype if k == EMBEDDING_KEY else v.dtype).contiguous() for k, v in state.items()}


def export_vllm(model, out_dir: str | Path, merge: bool = False, dtype: Optional[str] = None,
                source: Optional[dict] = None) -> ExportReport:
    """Write `model` as DIR/llm (what vLLM serves) + the client file + the manifest (module docstring)."""
    from safetensors.torch import save_file

    out, torch_dtype, identity, merged = prepare_export(model, out_dir, merge, dtype, source)
    out.mkdir(parents=True, exist_ok=True)
    llm_dir = out / LLM_DIR
    model.llm.to(torch_dtype).save_pretrained(llm_dir, safe_serialization=True, max_shard_size="5GB")
    if model.llm_dtype != torch_dtype:
        model.llm.to(model.llm_dtype)
    config_path = llm_dir / "config.json"
    config_path.write_text(json.dumps(transformers4_config(json.loads(config_path.read_text()), torch_dtype),
                                      indent=2, sort_keys=True))
    source_dir = Path(model.cfg.llm_model)
    copied = [name for name in TOKENIZER_FILES if (source_dir / name).is_file()]
    for name in copied:
        shutil.copyfile(source_dir / name, llm_dir / name)
    if not copied:  # a tokenizer without files of its own (e.g. built in memory): transformers writes one
        model.tokenizer.save_pretrained(llm_dir)
    save_file(client_state_dict(model, torch_dtype), str(out / CLIENT_FILE))

    manifest = {"format": 2, "target": "vllm", "variant": model.cfg.variant, "template": model.template.name,
                "dtype": str(torch_dtype).replace("torch.", ""), "hidden_size": int(model.llm.config.hidden_size),
                "num_query_tokens": int(model.cfg.qformer.num_query_tokens),
                "stop_strings": list(model.template.stop_strings), "merged_lora_layers": merged,
                "llm_dir": LLM_DIR, "client_file": CLIENT_FILE, "client_sha256": sha256_file(out / CLIENT_FILE),
                "llm_config_sha256": sha256_file(config_path),
                "model_config": OmegaConf.to_container(model.cfg, resolve=True), "model": identity}
    manifest["served_model_name"] = name = served_model_name(manifest)
    manifest["serve_command"] = ["vllm", "serve", str(llm_dir), "--served-model-name", name,
                                 "--enable-prompt-embeds", "--generation-config", "vllm", "--host", "127.0.0.1"]
    (out / EXPORT_INFO_FILE).write_text(json.dumps(manifest, indent=1))
    log.info("exported for vLLM to '%s' (served model name %s)", out, name)
    return ExportReport(out, -1, int(model.llm.config.vocab_size), merged, manifest["dtype"])
