"""Loading a local Llama-family LLM and its tokenizer with transformers, never from a hub."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from skingpt4.common.config import ConfigError, require_path

log = logging.getLogger("skingpt4.llm")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_tokenizer(directory: str, key: str = "model.llm_model"):
    from transformers import AutoTokenizer

    path = require_path(directory, key, "the local directory of a Llama-family LLM in transformers format", "dir")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:
        raise ConfigError(
            f"config key '{key}': could not load a tokenizer from '{path}' ({err.__class__.__name__}: {err}); "
            "the directory needs tokenizer.model (sentencepiece) or tokenizer.json"
        ) from err
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Llama has no pad token. Padding is masked out by position, but templates that end answers with
        # "</s>" need pad != eos so that nothing can confuse the two.
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def load_llm(directory: str, dtype: torch.dtype, device: torch.device, quantization: str = "none",
             key: str = "model.llm_model"):
    """A frozen causal LM in eval mode. quantization: "none", "8bit" or "4bit" (bitsandbytes, CUDA only)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = require_path(directory, key, "the local directory of a Llama-family LLM in transformers format", "dir")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"config key '{key}': '{path}' is not a transformers model directory (no config.json)")
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    kwargs = dict(dtype=dtype, local_files_only=True)
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
