"""From a `model:` config block to a ready `SkinGPT4`: the one way the model is built, by training, chat, the demo,
evaluation and the benchmarks (docs/model.md).

    model = build_model(cfg.model)             # or build_model(cfg.model, device="cuda:1")

The user's block is merged over its variant's YAML (skingpt4/models/variants/<variant>.yaml) and checked
against `SkinGPT4Config`; every problem is a `ConfigError` naming the key (a typo lists the valid keys, an
unknown variant or template lists the valid names). Weights come from local paths only.
"""
from __future__ import annotations

import logging
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, apply_schema, require_path
from skingpt4.common.precision import get_dtype, resolve_device
from skingpt4.models.llm import load_llm, load_tokenizer
from skingpt4.models.loading import load_frozen_weights, load_trained_checkpoint
from skingpt4.models.lora import add_adapters, check_settings
from skingpt4.models.skin_gpt4 import SkinGPT4, SkinGPT4Config
from skingpt4.models.variant_files import variant_files

log = logging.getLogger("skingpt4.model")
QUANTIZATIONS = ("none", "8bit", "4bit")
ATTENTION = ("sdpa", "eager", "flash_attention_2")


def model_config(user_cfg) -> DictConfig:
    """The user's `model:` block merged over the YAML of its `variant`, validated and resolved."""
    variants = variant_files()
    variant = (user_cfg or {}).get("variant", SkinGPT4Config.variant)
    if variant not in variants:
        raise ConfigError(registry.unknown_choice_message("model.variant", variant, sorted(variants)))
    defaults = OmegaConf.load(variants[variant])
    cfg = apply_schema(user_cfg, SkinGPT4Config, "model", defaults=defaults)
    cfg.variant = variant
    try:
        OmegaConf.resolve(cfg)
    except Exception as err:  # an ${oc.env:...} or ${...} that cannot be resolved
        raise ConfigError(f"model: could not resolve an interpolation: {err}") from None
    if cfg.template not in registry.chat_templates:
        raise ConfigError(registry.unknown_choice_message("model.template", cfg.template,
                                                          registry.chat_templates.names()))
    if cfg.llm_quantization not in QUANTIZATIONS:
        raise ConfigError(f"model.llm_quantization={cfg.llm_quantization}: choose one of {', '.join(QUANTIZATIONS)}")
    if cfg.attn_implementation not in ATTENTION:
        raise ConfigError(f"model.attn_implementation={cfg.attn_implementation}: choose one of {', '.join(ATTENTION)}")
    if cfg.max_txt_len < 1:
        raise ConfigError(f"model.max_txt_len must be >= 1, got {cfg.max_txt_len}")
    check_settings(cfg.lora)
    return cfg


def build_model(user_cfg, device: Optional[str] = None) -> SkinGPT4:
    """Build the model of a `model:` block; `device` (cpu, cuda, cuda:N) overrides `model.device`."""
    if device is not None:
        user_cfg = OmegaConf.merge(user_cfg or {}, {"device": str(device)})
    cfg = model_config(user_cfg)
    place = resolve_device(cfg.device)
    llm_dtype = get_dtype(cfg.llm_precision, place, "model.llm_precision")
    require_path(cfg.llm_model, "model.llm_model", "the local directory of a Llama-family LLM in transformers "
                 "format (e.g. Llama-2-13b-chat-hf)", "dir")  # checked first: it is the path most often wrong
    if cfg.ckpt:
        require_path(cfg.ckpt, "model.ckpt", "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection", "file")
    tokenizer = load_tokenizer(cfg.llm_model, cfg.tokenizer.pad_token)
    template = registry.chat_templates.get(cfg.template)
    llm = load_llm(cfg.llm_model, llm_dtype, place, cfg.llm_quantization, attn_implementation=cfg.attn_implementation)
    if cfg.lora.r:
        add_adapters(llm, cfg.lora)  # QLoRA when the LLM was loaded in 4 bits
    if cfg.gradient_checkpointing:
        llm.gradient_checkpointing_enable()
        llm.config.use_cache = False
    model = SkinGPT4(cfg, template, tokenizer, llm)
    model.load_reports = load_frozen_weights(model, cfg)
    if cfg.ckpt:
        model.load_reports.append(load_trained_checkpoint(model, cfg.ckpt))
    return model.place()
