"""Loading a local Llama-family LLM and its tokenizer with transformers, never from a hub."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from skingpt4.common.config import ConfigError, require_path

log = logging.getLogger("skingpt4.llm")

def load_tokenizer(directory: str, pad_token: Optional[str] = None, key: str = "model.llm_model"):
    """The LLM's tokenizer with its pad token set (`model.tokenizer.pad_token`: unk | eos | a vocabulary token |
    None for the tokenizer's own). Padding is masked out by position, but templates that end answers with the
    EOS token need pad != eos so that nothing can confuse the two."""
    from transformers import AutoTokenizer

    path = require_path(directory, key, "the local directory of a Llama-family LLM in transformers format", "dir")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:
        raise ConfigError(
            f"config key '{key}': could not load a tokenizer from '{path}' ({err.__class__.__name__}: {err}); "
            "the directory needs tokenizer.model (sentencepiece) or tokenizer.json"
        ) from err
    if pad_token is not None:
        named = {"unk": tokenizer.unk_token, "eos": tokenizer.eos_token}.get(pad_token, pad_token)
        if named is None:
            raise ConfigError(f"model.tokenizer.pad_token={pad_token}: the tokenizer in '{path}' has no {pad_token} "
                              "token; name a token of its vocabulary (e.g. a reserved special token)")
        if tokenizer.convert_tokens_to_ids(named) in (None, tokenizer.unk_token_id) and named != tokenizer.unk_token:
            raise ConfigError(f"model.tokenizer.pad_token={pad_token}: '{named}' is not in the vocabulary of the "
                              f"tokenizer in '{path}'")
        tokenizer.pad_token = named
    if tokenizer.pad_token is None:
        raise ConfigError(f"the tokenizer in '{path}' has no pad token; set model.tokenizer.pad_token (unk, eos or a "
                          "token of its vocabulary) in the model variant or config")
    for name in ("bos", "eos"):
        if getattr(tokenizer, f"{name}_token_id") is None:
            raise ConfigError(f"the tokenizer in '{path}' has no {name.upper()} token, which the prompt layout needs")
    return tokenizer


def load_llm(directory: str, dtype: torch.dtype, device: torch.device, quantization: str = "none",
             key: str = "model.llm_model", attn_implementation: str = "sdpa"):
    """A frozen causal LM in eval mode. quantization: "none", "8bit" or "4bit" (bitsandbytes, CUDA only).
    attn_implementation: sdpa | eager | flash_attention_2 (`check_attention`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = require_path(directory, key, "the local directory of a Llama-family LLM in transformers format", "dir")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"config key '{key}': '{path}' is not a transformers model directory (no config.json)")
    check_attention(attn_implementation, device, dtype)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    kwargs = dict(dtype=dtype, local_files_only=True, attn_implementation=attn_implementation)
    if quantization != "none":
        kwargs.update(quantization_kwargs(quantization, device, dtype))
    elif device.type == "cuda":
        kwargs["device_map"] = {"": str(device)}  # load straight onto the GPU, not through 26 GB of host RAM
    try:
        llm = AutoModelForCausalLM.from_pretrained(str(path), config=config, **kwargs)
    except Exception as err:
        raise ConfigError(f"config key '{key}': could not load the LLM from '{path}': {err}") from err
    if "device_map" not in kwargs:
        llm.to(device)
    llm.eval()
    for param in llm.parameters():
        param.requires_grad = False
    log.info("loaded LLM %s from '%s' (%s, hidden %d, %d layers, %s parameters)", config.model_type, path,
             str(dtype).replace("torch.", ""), config.hidden_size, config.num_hidden_layers,
             f"{sum(p.numel() for p in llm.parameters()):,}")
    return llm


def check_attention(attn_implementation: str, device: torch.device, dtype: torch.dtype) -> None:
    """flash_attention_2 needs CUDA, fp16/bf16 and the flash-attn package; sdpa and eager run anywhere."""
    if attn_implementation != "flash_attention_2":
        return
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        raise ConfigError(f"model.attn_implementation=flash_attention_2 needs a CUDA device and llm_precision fp16 or "
                          f"bf16 (got {device}, {str(dtype).replace('torch.', '')}); use sdpa")
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("model.attn_implementation=flash_attention_2 needs the flash-attn package (pip install "
                          "flash-attn); sdpa uses PyTorch's own flash kernel without it")


def quantization_kwargs(quantization: str, device: torch.device, dtype: torch.dtype) -> dict:
    if device.type != "cuda":
        raise ConfigError(
            f"model.llm_quantization={quantization} needs a CUDA GPU (bitsandbytes); this model is placed on "
            f"'{device}'. Use llm_quantization: none on CPU."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"model.llm_quantization={quantization} needs bitsandbytes: pip install -e '.[quantization]'"
        ) from err
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    else:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")
    return dict(quantization_config=bnb, device_map={"": device.index or 0})


def random_llm(shapes: dict, tokenizer, dtype: torch.dtype, device: torch.device, attn_implementation: str = "sdpa"):
    """A frozen LlamaForCausalLM of `shapes` (LlamaConfig fields; `vocab_size` None: the tokenizer's) with random
    weights, allocated on `device` in `dtype` from the start (13B: no fp32 copy on the host). For
    `build_model(..., random_llm_shapes=...)`: benchmarks and the tiny world's build, never for answers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = {**shapes, "vocab_size": shapes.get("vocab_size") or len(tokenizer)}
    config = LlamaConfig(**shapes, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=None, attn_implementation=attn_implementation)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            llm = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    llm.to(dtype).eval()
    for param in llm.parameters():
        param.requires_grad = False
    return llm


def load_llm_on_meta(directory: str, dtype: torch.dtype, key: str = "model.llm_model",
                     attn_implementation: str = "sdpa"):
    """The LLM of `directory` with its parameters on the meta device (shapes only, no weight read) and its buffers
    (rotary frequencies) real: for sharded training, where each process then reads only its shard of every weight
    from the safetensors files (runners/sharding.py, `load_llm_shards`). `llm.weights_dir` names the folder."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    path = require_path(directory, key, "the local directory of a Llama-family LLM in transformers format", "dir")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"config key '{key}': '{path}' is not a transformers model directory (no config.json)")
    if not list(Path(path).glob("*.safetensors")):
        raise ConfigError(f"config key '{key}': sharded training (run.sharding=fsdp) reads each process's shard from "
                          f"safetensors files, and '{path}' has none; convert it once with "
                          "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR2)")
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    config._attn_implementation = attn_implementation
    with init_empty_weights(include_buffers=False):
        llm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    llm.eval()
    for param in llm.parameters():
        param.requires_grad = False
    llm.weights_dir = str(path)
    log.info("LLM %s from '%s' on the meta device (%s, %d layers): each process loads its own shard", config.model_type,
             path, str(dtype).replace("torch.", ""), config.num_hidden_layers)
    return llm
