"""Loading the frozen weights and the projection into a built `SkinGPT4` (docs/model.md, "Checkpoint formats").

The vision encoder, ln_vision, Q-Former and query tokens come from `model.blip2_hf_dir` (a transformers BLIP-2
snapshot) or from `model.vit_model` + `model.q_former_model` (the original's files); there is no random
initialisation of a frozen part. Key names are converted by the functions next to each module (`eva_vit.py`,
`qformer.py`); files are read by `checkpoints.py`. Every load is strict and reported, and weights that are not
all finite (NaN or infinity: a diverged or damaged run) are refused before they reach the model.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from skingpt4.common.config import ConfigError, require_path
from skingpt4.models import checkpoints as ckpt_io
from skingpt4.models.eva_vit import eva_checkpoint_to_ours, hf_vision_to_ours, ln_vision_to_ours
from skingpt4.models.lora import ADAPTER_MARKER, has_adapters
from skingpt4.models.qformer import lavis_to_ours

log = logging.getLogger("skingpt4.model")


def require_finite(state: dict, source: str, key: Optional[str] = None) -> None:
    """A state dict with a NaN or infinite value is a CheckpointError naming the file, the tensor and the count:
    loaded, it would make every answer and every probability NaN."""
    for name in sorted(state):
        tensor = state[name]
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            where = f"config key '{key}': " if key else ""
            raise ckpt_io.CheckpointError(
                f"{where}'{source}' holds non-finite weights (NaN or infinity) in '{name}' ({bad} of "
                f"{tensor.numel()} values): the file is damaged or its run diverged; use another checkpoint")


def load_frozen_weights(model: nn.Module, cfg) -> list[ckpt_io.LoadReport]:
    if cfg.blip2_hf_dir:
        if cfg.vit_model or cfg.q_former_model:
            raise ConfigError("set either model.blip2_hf_dir or model.vit_model + model.q_former_model, not both")
        return load_from_hf_blip2(model, cfg.blip2_hf_dir, cfg)
    what_qf = "blip2_pretrained_flant5xxl.pth (the BLIP-2 checkpoint with the Q-Former), or set model.blip2_hf_dir"
    qf_path = require_path(cfg.q_former_model, "model.q_former_model", what_qf, "file")
    blip2 = ckpt_io.state_dict_of(ckpt_io.read_checkpoint(qf_path, "model.q_former_model"), qf_path)
    require_finite(blip2, str(qf_path), "model.q_former_model")

    if cfg.vit_model:
        vit_path = require_path(cfg.vit_model, "model.vit_model", "eva_vit_g.pth (EVA-ViT-g weights)", "file")
        vit_sd = ckpt_io.state_dict_of(ckpt_io.read_checkpoint(vit_path, "model.vit_model"), vit_path)
        require_finite(vit_sd, str(vit_path), "model.vit_model")
        vit_source = str(vit_path)
    elif any(k.startswith("visual_encoder.") for k in blip2):
        vit_sd = {k[len("visual_encoder."):]: v for k, v in blip2.items() if k.startswith("visual_encoder.")}
        vit_source = f"{qf_path} (visual_encoder.*)"
    else:
        raise ConfigError("config key 'model.vit_model' is not set and the BLIP-2 checkpoint has no "
                          "visual_encoder.*; put the path of eva_vit_g.pth there")
    vit_sd, dropped = eva_checkpoint_to_ours(vit_sd, cfg.vision.depth)
    ln_vision = ln_vision_to_ours(blip2)
    if not ln_vision:
        raise ckpt_io.CheckpointError(f"'{qf_path}' has no ln_vision.weight/bias (is it a BLIP-2 checkpoint?)")
    reports = [ckpt_io.load_into(model.visual_encoder, {**vit_sd, **ln_vision}, f"{vit_source} + ln_vision",
                                 "vision encoder", ignored=dropped)]
    qformer_sd, text_only = lavis_to_ours(blip2)
    ignored = text_only + [k for k in blip2 if not k.startswith(("Qformer.", "query_tokens", "ln_vision."))]
    reports.append(ckpt_io.load_into(model.qformer, qformer_sd, str(qf_path), "Q-Former", ignored=ignored))
    reports.append(load_query_tokens(model, blip2.get("query_tokens"), str(qf_path)))
    return reports


def load_from_hf_blip2(model: nn.Module, directory: str, cfg) -> list[ckpt_io.LoadReport]:
    path = require_path(directory, "model.blip2_hf_dir", "a transformers BLIP-2 snapshot directory", "dir")
    config, weights = ckpt_io.read_hf_blip2_parts(path)
    require_finite(weights, str(path), "model.blip2_hf_dir")
    vcfg, qcfg = config.get("vision_config", {}), config.get("qformer_config", {})
    for ours, theirs, name in ((cfg.vision.width, vcfg.get("hidden_size", 1408), "vision hidden size"),
                               (cfg.qformer.hidden_size, qcfg.get("hidden_size", 768), "Q-Former hidden size")):
        if ours != theirs:
            raise ckpt_io.CheckpointError(f"'{path}': {name} is {theirs} but the model config says {ours}")
    vision = {k[len("vision_model."):]: v for k, v in weights.items() if k.startswith("vision_model.")}
    vision_ours = hf_vision_to_ours(vision)  # post_layernorm (= ln_vision) becomes our final `norm`
    ln_vision = {k: v for k, v in vision_ours.items() if k.startswith("norm.")}
    vision_ours, dropped = eva_checkpoint_to_ours(vision_ours, cfg.vision.depth)
    vision_ours.update(ln_vision)
    qformer = {k[len("qformer."):]: v for k, v in weights.items() if k.startswith("qformer.")}
    return [ckpt_io.load_into(model.visual_encoder, vision_ours, str(path), "vision encoder", ignored=dropped),
            ckpt_io.load_into(model.qformer, qformer, str(path), "Q-Former"),
            load_query_tokens(model, weights.get("query_tokens"), str(path))]


def load_query_tokens(model: nn.Module, tokens: Optional[torch.Tensor], source: str) -> ckpt_io.LoadReport:
    if tokens is None:
        raise ckpt_io.CheckpointError(f"'{source}' has no query_tokens")
    if tokens.shape != model.query_tokens.shape:
        raise ckpt_io.CheckpointError(f"'{source}': query_tokens has shape {tuple(tokens.shape)}, "
                                      f"the model expects {tuple(model.query_tokens.shape)}")
    model.query_tokens.data.copy_(tokens)
    return ckpt_io.LoadReport(source, "query tokens", loaded=["query_tokens"])


def load_trained_checkpoint(model: nn.Module, path: str, key: str = "model.ckpt") -> ckpt_io.LoadReport:
    """`model.ckpt`: a projection checkpoint (SkinGPT-4 / MiniGPT-4 / ours), or one of ours with LoRA adapters,
    which loads strictly into the trainable set (projection + adapters). A projection-only checkpoint into a model
    with adapters (a LoRA step 2 starting from a step-1 projection) leaves the adapters freshly initialised."""
    require_path(path, key, "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection", "file")
    state = ckpt_io.state_dict_of(ckpt_io.read_checkpoint(path, key), path)
    require_finite(state, str(path), key)
    adapters = sorted(k for k in state if ADAPTER_MARKER in k)
    if not adapters:
        report = load_projection(model, path, key)
        if has_adapters(model.llm):
            log.info("'%s' holds no LoRA adapters: the adapters start from their initialisation", path)
        return report
    if not has_adapters(model.llm):
        ranks = sorted({int(state[k].shape[0]) for k in adapters if ".lora_A." in k})
        layers = sorted({k.split(ADAPTER_MARKER)[0].rsplit(".", 1)[-1] for k in adapters})
        raise ckpt_io.CheckpointError(
            f"config key '{key}': '{path}' holds LoRA adapters ({len(adapters)} tensors, rank {ranks}, on "
            f"{', '.join(layers)}) but the model has none; set model.lora.r={ranks[0]} and "
            f"model.lora.target_modules=[{','.join(layers)}] as in the run that wrote it")
    model.load_trainable_state_dict(state, str(path))
    report = ckpt_io.LoadReport(str(path), "projection + LoRA adapters", loaded=sorted(state))
    log.info("%s", report)
    return report


def load_projection(model: nn.Module, path: str, key: str = "model.ckpt") -> ckpt_io.LoadReport:
    """The projection of a SkinGPT-4 / MiniGPT-4 checkpoint (stored as llama_proj / llm_proj /
    language_projection) into `model.llama_proj`."""
    require_path(path, key, "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection", "file")
    before = {name: value.clone() for name, value in model.llama_proj.state_dict().items()}
    report = ckpt_io.load_projection(model.llama_proj, path, key)
    try:  # checked after the load (the file is read once); a refused projection is put back as it was
        require_finite(dict(model.llama_proj.state_dict()), str(path), key)
    except ckpt_io.CheckpointError:
        model.llama_proj.load_state_dict(before)
        raise
    return report
