"""From a `model:` config block to a ready `SkinGPT4`: the one way the model is built, by training, chat, the demo,
evaluation and the benchmarks (docs/model.md).

    model = build_model(cfg.model)             # or build_model(cfg.model, device="cuda:1")
    model = build_model(cfg.model, random_llm_shapes={...})          # random weights (benchmarks, tiny build)

The user's block is merged over its variant's YAML (skingpt4/models/variants/<variant>.yaml) and checked
against `SkinGPT4Config`; every problem is a `ConfigError` naming the key (a typo lists the valid keys, an
unknown variant or template lists the valid names). Weights come from local paths only.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from skingpt4.common import registry
from skingpt4.common.config import (ConfigError, ConfigPath, apply_schema, config_path_problems, load_layers,
                                    require_path)
from skingpt4.common.precision import get_dtype, resolve_device
from skingpt4.models.llm import load_llm, load_llm_on_meta, load_tokenizer, random_llm
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
    defaults = load_layers(variants[variant])
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


LLM_WHAT = "the local directory of a Llama-family LLM in transformers format (e.g. Llama-2-13b-chat-hf)"


def model_paths(cfg: DictConfig, ckpt_what: str) -> tuple[ConfigPath, ...]:
    """The weight paths a resolved `model:` block (`model_config`) makes `build_model` read, keys from the block."""
    if cfg.blip2_hf_dir:
        frozen = (ConfigPath("blip2_hf_dir", "a transformers BLIP-2 snapshot directory", "dir"),)
    else:
        frozen = (ConfigPath("q_former_model", "blip2_pretrained_flant5xxl.pth (the BLIP-2 checkpoint with the "
                             "Q-Former), or set model.blip2_hf_dir", "checkpoint"),
                  ConfigPath("vit_model", "eva_vit_g.pth (EVA-ViT-g weights)", "checkpoint", optional=True))
    return frozen + (ConfigPath("llm_model", LLM_WHAT, "dir"),
                     ConfigPath("ckpt", ckpt_what, "checkpoint", optional=True))


def model_path_problems(model_section, ckpt_what: str) -> list[str]:
    """Every bad weight path of a `model:` block (the variant's YAML supplies the tiny model's), keys from the top."""
    if model_section is None:
        return []
    resolved = model_config(model_section)
    return config_path_problems(resolved, model_paths(resolved, ckpt_what), prefix="model.")


@contextlib.contextmanager
def _adapters_off_meta(llm):
    """While LoRA layers are injected, give meta-device Linear weights an empty stand-in on the CPU: PEFT puts the
    adapters on their base layer's device, and adapters on the meta device would lose their initial values (the
    same draws from the same RNG stream as an unsharded build). The meta weights are put back afterwards."""
    stashed = []
    for module in llm.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None and weight.is_meta:
            stashed.append((module, weight))
            module.weight = torch.nn.Parameter(torch.empty(0, dtype=weight.dtype), requires_grad=False)
    try:
        yield
    finally:
        for module, weight in stashed:
            module.weight = weight


def build_model(user_cfg, device: Optional[str] = None, random_llm_shapes: Optional[dict] = None,
                llm_on_meta: bool = False) -> SkinGPT4:
    """Build the model of a `model:` block; `device` (cpu, cuda, cuda:N) overrides `model.device`.

    `random_llm_shapes` (LlamaConfig fields): a model of the same parts with random weights instead, made directly
    on its device, no weight file read (`model.llm_model` then only supplies the tokenizer, `model.ckpt` must be
    null): the benchmarks' full-size models and the tiny world's build. `llm_on_meta`: its LLM is made on the meta
    device (shapes only, it cannot run): with random shapes, to measure the vision side of the full size without the
    memory for 13B; with `model.llm_model`, for sharded training, which then loads each process's shard of the
    weights (runners/sharding.py). LoRA adapters are real either way."""
    if device is not None:
        user_cfg = OmegaConf.merge(user_cfg or {}, {"device": str(device)})
    cfg = model_config(user_cfg)
    place = resolve_device(cfg.device)
    llm_dtype = get_dtype(cfg.llm_precision, place, "model.llm_precision")
    random = random_llm_shapes is not None
    require_path(cfg.llm_model, "model.llm_model", LLM_WHAT if not random else "a tokenizer directory", "dir")
    if cfg.ckpt and random:
        raise ConfigError("model.ckpt must be null for a model of random weights")
    if cfg.ckpt:
        require_path(cfg.ckpt, "model.ckpt", "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection", "file")
    tokenizer = load_tokenizer(cfg.llm_model, cfg.tokenizer.pad_token)
    template = registry.chat_templates.get(cfg.template)
    if random:
        llm = random_llm(random_llm_shapes, tokenizer, llm_dtype, torch.device("meta") if llm_on_meta else place,
                         cfg.attn_implementation)
    elif llm_on_meta:
        if cfg.llm_quantization != "none":
            raise ConfigError(f"model.llm_quantization={cfg.llm_quantization} cannot be sharded (FSDP needs plain "
                              "weights); use llm_quantization: none with run.sharding=fsdp, or run.sharding=none")
        llm = load_llm_on_meta(cfg.llm_model, llm_dtype, attn_implementation=cfg.attn_implementation)
    else:
        llm = load_llm(cfg.llm_model, llm_dtype, place, cfg.llm_quantization,
                       attn_implementation=cfg.attn_implementation)
    if cfg.lora.r:
        with _adapters_off_meta(llm):
            add_adapters(llm, cfg.lora)  # QLoRA when the LLM was loaded in 4 bits
    if cfg.gradient_checkpointing:
        llm.gradient_checkpointing_enable()
        llm.config.use_cache = False
    if random:
        with torch.device(place):  # ViT-g's 1B parameters are made on the GPU too, then cast by place()
            model = SkinGPT4(cfg, template, tokenizer, llm)
            torch.nn.init.normal_(model.query_tokens, std=0.02)
        model.load_reports = []
        return model.place()
    model = SkinGPT4(cfg, template, tokenizer, llm)
    model.load_reports = load_frozen_weights(model, cfg)
    if cfg.ckpt:
        model.load_reports.append(load_trained_checkpoint(model, cfg.ckpt))
    return model.place()
