"""SkinGPT-4: frozen EVA-ViT-g + ln_vision + Q-Former read a skin photo; a trainable Linear(768 -> H) maps the
32 query embeddings into a frozen Llama-family LLM (Llama-2-13b-chat, H = 5120, in the paper).

Read top to bottom: config -> building (weights from local files only) -> image encoding -> prompt/label
layout -> training forward -> saving/loading the trainable part.
"""
from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, apply_schema, require_path
from skingpt4.models import checkpoints as ckpt_io
from skingpt4.models.eva_vit import (VisionConfig, build_eva_vit, eva_checkpoint_to_ours, hf_vision_to_ours,
                                     ln_vision_to_ours)
from skingpt4.models.llm import DTYPES, load_llm, load_tokenizer
from skingpt4.models.qformer import QFormerConfig, build_qformer, lavis_to_ours
from skingpt4.prompting.tokenize import tokenize_segment

log = logging.getLogger("skingpt4.model")

IMAGE_PLACEHOLDER = "<ImageHere>"
IGNORE_INDEX = -100
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIGS = {name: Path(__file__).parent / "configs" / f"{name}.yaml"
                   for name in ("tiny", "llama2_13b_chat", "vicuna_7b", "vicuna_13b")}


@dataclass
class SkinGPT4Config:
    arch: str = "skin_gpt4"
    model_type: str = "llama2_13b_chat"      # which default YAML (models/configs/<model_type>.yaml) goes under yours
    # --- weights, all local paths ---
    vit_model: Optional[str] = None          # eva_vit_g.pth (bare EVA state dict)
    q_former_model: Optional[str] = None     # blip2_pretrained_flant5xxl.pth (LAVIS {"model": ...})
    blip2_hf_dir: Optional[str] = None       # or: a transformers BLIP-2 snapshot dir (vision + Q-Former from it)
    llm_model: Optional[str] = None          # a Llama-family transformers directory
    ckpt: Optional[str] = None               # a SkinGPT-4 / MiniGPT-4 projection checkpoint (.pth)
    # --- architecture ---
    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    # --- prompts (DESIGN §5) ---
    prompt_path: Optional[str] = None        # prompts/*.txt, one per line containing <Img><ImageHere></Img>
    prompt_template: str = "###Human: {} ###Assistant: "
    end_sym: str = "###"
    max_txt_len: int = 160
    prompt_seed: int = 0                     # seeds the choice of a training prompt per sample
    # --- placement and precision ---
    device: str = "auto"                     # auto | cpu | cuda | cuda:N
    vit_precision: str = "auto"              # auto (fp16 on CUDA as the original, fp32 on CPU) | fp32 | bf16 | fp16
    qformer_precision: str = "fp32"
    llm_precision: str = "auto"              # auto (fp16 on CUDA as the original, fp32 on CPU) | fp32 | bf16 | fp16
    llm_quantization: str = "none"           # none | 8bit | 4bit (bitsandbytes, CUDA only)
    gradient_checkpointing: bool = False     # recompute LLM activations in backward (less memory, ~30% slower)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device={name} but no CUDA GPU is available; use device: cpu (or auto)")
    return device


def resolve_dtype(name: str, device: torch.device, key: str) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"{key}={name}: choose one of auto, {', '.join(DTYPES)}")
    if DTYPES[name] is torch.float16 and device.type != "cuda":
        raise ConfigError(f"{key}=fp16 needs a CUDA device; on CPU use bf16 or fp32")
    return DTYPES[name]


def model_config(user_cfg) -> DictConfig:
    """The user's `model:` block merged over the default YAML of its `model_type`, validated."""
    model_type = (user_cfg or {}).get("model_type", SkinGPT4Config.model_type)
    if model_type not in DEFAULT_CONFIGS:
        raise ConfigError(registry.unknown_choice_message("model.model_type", model_type, sorted(DEFAULT_CONFIGS)))
    defaults = OmegaConf.load(DEFAULT_CONFIGS[model_type])
    cfg = apply_schema(user_cfg, SkinGPT4Config, "model", defaults=defaults)
    OmegaConf.resolve(cfg)
    return cfg


def read_prompts(path: Optional[str], template: str) -> list[str]:
    """Prompt file -> template-wrapped prompts. Lines without <ImageHere> are skipped (as the original)."""
    if not path:
        return []
    file = Path(path)
    if not file.is_absolute() and not file.exists():
        file = PROJECT_ROOT / file
    require_path(str(file), "model.prompt_path", "a text file with one prompt per line (see prompts/)", "file")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    prompts = [template.format(line) for line in lines if IMAGE_PLACEHOLDER in line]
    if not prompts:
        raise ConfigError(f"model.prompt_path '{path}' has no line containing <Img>{IMAGE_PLACEHOLDER}</Img>")
    return prompts


@registry.models.register("skin_gpt4")
class SkinGPT4(nn.Module):
    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, user_cfg) -> "SkinGPT4":
        return cls(model_config(user_cfg))

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.vit_dtype = resolve_dtype(cfg.vit_precision, self.device, "model.vit_precision")
        self.qformer_dtype = resolve_dtype(cfg.qformer_precision, self.device, "model.qformer_precision")
        self.llm_dtype = resolve_dtype(cfg.llm_precision, self.device, "model.llm_precision")
        if cfg.llm_quantization not in ("none", "8bit", "4bit"):
            raise ConfigError(f"model.llm_quantization={cfg.llm_quantization}: choose one of none, 8bit, 4bit")
        require_path(cfg.llm_model, "model.llm_model", "the local directory of a Llama-family LLM in transformers "
                     "format (e.g. Llama-2-13b-chat-hf)", "dir")  # checked first: it is the path most often wrong

        self.visual_encoder = build_eva_vit(VisionConfig(**cfg.vision))
        self.qformer = build_qformer(QFormerConfig(**cfg.qformer), cfg.vision.width)
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.qformer.num_query_tokens, cfg.qformer.hidden_size))
        self.load_reports = self._load_frozen_weights()

        self.tokenizer = load_tokenizer(cfg.llm_model)
        self.llm = load_llm(cfg.llm_model, self.llm_dtype, self.device, cfg.llm_quantization)
        if cfg.gradient_checkpointing:
            self.llm.gradient_checkpointing_enable()
            self.llm.config.use_cache = False
        self.llama_proj = nn.Linear(cfg.qformer.hidden_size, self.llm.config.hidden_size)
        if cfg.ckpt:
            self.load_reports.append(self.load_projection(cfg.ckpt))

        # Only the projection trains (paper); everything else is frozen and stays in eval mode (see train()).
        for name, param in self.named_parameters():
            param.requires_grad = name.startswith("llama_proj.")
        self.visual_encoder.to(self.device, self.vit_dtype)
        self.visual_encoder.norm.float()  # ln_vision keeps fp32 weights; it computes in fp32
        self.qformer.to(self.device, self.qformer_dtype)
        self.query_tokens.data = self.query_tokens.data.to(self.device, self.qformer_dtype)
        self.llama_proj.to(self.device, torch.float32)  # trained in fp32; its output is cast to the LLM dtype
        self.prompt_template = cfg.prompt_template
        self.end_sym = cfg.end_sym
        self.prompt_list = read_prompts(cfg.prompt_path, cfg.prompt_template)
        self.prompt_rng = random.Random(cfg.prompt_seed)
        self.train(False)

    def _load_frozen_weights(self) -> list[ckpt_io.LoadReport]:
        """Vision encoder, ln_vision, Q-Former and query tokens, from `blip2_hf_dir` or from `vit_model` +
        `q_former_model` (the original's files). There is no random initialisation of frozen parts."""
        cfg = self.cfg
        if cfg.blip2_hf_dir:
            if cfg.vit_model or cfg.q_former_model:
                raise ConfigError("set either model.blip2_hf_dir or model.vit_model + model.q_former_model, not both")
            return self._load_from_hf_blip2(cfg.blip2_hf_dir)
        what_qf = "blip2_pretrained_flant5xxl.pth (the BLIP-2 checkpoint with the Q-Former), or set model.blip2_hf_dir"
        qf_path = require_path(cfg.q_former_model, "model.q_former_model", what_qf, "file")
        blip2 = ckpt_io.state_dict_of(ckpt_io.read_checkpoint(qf_path), qf_path)

        if cfg.vit_model:
            vit_path = require_path(cfg.vit_model, "model.vit_model", "eva_vit_g.pth (EVA-ViT-g weights)", "file")
            vit_sd = ckpt_io.state_dict_of(ckpt_io.read_checkpoint(vit_path), vit_path)
            vit_source = str(vit_path)
        elif any(k.startswith("visual_encoder.") for k in blip2):
            vit_sd = {k[len("visual_encoder."):]: v for k, v in blip2.items() if k.startswith("visual_encoder.")}
            vit_source = f"{qf_path} (visual_encoder.*)"
        else:
            raise ConfigError("config key 'model.vit_model' is not set and the BLIP-2 checkpoint has no "
                              "visual_encoder.*; put the path of eva_vit_g.pth there")
        vit_sd, dropped = eva_checkpoint_to_ours(vit_sd, self.cfg.vision.depth)
        ln_vision = ln_vision_to_ours(blip2)
        if not ln_vision:
            raise ckpt_io.CheckpointError(f"'{qf_path}' has no ln_vision.weight/bias (is it a BLIP-2 checkpoint?)")
        reports = [ckpt_io.load_into(self.visual_encoder, {**vit_sd, **ln_vision}, f"{vit_source} + ln_vision",
                                     "vision encoder", ignored=dropped)]
        qformer_sd, text_only = lavis_to_ours(blip2)
        ignored = text_only + [k for k in blip2 if not k.startswith(("Qformer.", "query_tokens", "ln_vision."))]
        reports.append(ckpt_io.load_into(self.qformer, qformer_sd, str(qf_path), "Q-Former", ignored=ignored))
        reports.append(self._load_query_tokens(blip2.get("query_tokens"), str(qf_path)))
        return reports

    def _load_from_hf_blip2(self, directory: str) -> list[ckpt_io.LoadReport]:
        path = require_path(directory, "model.blip2_hf_dir", "a transformers BLIP-2 snapshot directory", "dir")
        config, weights = ckpt_io.read_hf_blip2_parts(path)
        vcfg, qcfg = config.get("vision_config", {}), config.get("qformer_config", {})
        for ours, theirs, name in ((self.cfg.vision.width, vcfg.get("hidden_size", 1408), "vision hidden size"),
                                   (self.cfg.qformer.hidden_size, qcfg.get("hidden_size", 768), "Q-Former hidden size")):
            if ours != theirs:
                raise ckpt_io.CheckpointError(f"'{path}': {name} is {theirs} but the model config says {ours}")
        vision = {k[len("vision_model."):]: v for k, v in weights.items() if k.startswith("vision_model.")}
        vision_ours = hf_vision_to_ours(vision)  # post_layernorm (= ln_vision) becomes our final `norm`
        ln_vision = {k: v for k, v in vision_ours.items() if k.startswith("norm.")}
        vision_ours, dropped = eva_checkpoint_to_ours(vision_ours, self.cfg.vision.depth)
        vision_ours.update(ln_vision)
        qformer = {k[len("qformer."):]: v for k, v in weights.items() if k.startswith("qformer.")}
        return [ckpt_io.load_into(self.visual_encoder, vision_ours, str(path), "vision encoder", ignored=dropped),
                ckpt_io.load_into(self.qformer, qformer, str(path), "Q-Former"),
                self._load_query_tokens(weights.get("query_tokens"), str(path))]

    def _load_query_tokens(self, tokens: Optional[torch.Tensor], source: str) -> ckpt_io.LoadReport:
        if tokens is None:
            raise ckpt_io.CheckpointError(f"'{source}' has no query_tokens")
        if tokens.shape != self.query_tokens.shape:
            raise ckpt_io.CheckpointError(f"'{source}': query_tokens has shape {tuple(tokens.shape)}, "
                                          f"the model expects {tuple(self.query_tokens.shape)}")
        self.query_tokens.data.copy_(tokens)
        return ckpt_io.LoadReport(source, "query tokens", loaded=["query_tokens"])

    def train(self, mode: bool = True) -> "SkinGPT4":
        super().train(mode)
        for frozen in (self.visual_encoder, self.qformer, self.llm):
            frozen.eval()  # no dropout / drop-path in frozen parts, as in the original
        return self

    # ------------------------------------------------------------------------------------------ images
    def _autocast(self, dtype: torch.dtype):
        if self.device.type == "cuda" and dtype != torch.float32:
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    @torch.no_grad()
    def encode_queries(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,224,224] -> Q-Former outputs [B,32,768]: the frozen part, cacheable."""
        images = images.to(self.device, self.vit_dtype)
        with self._autocast(self.vit_dtype):
            features = self.visual_encoder.forward_features(images)  # includes ln_vision
        queries = self.query_tokens.expand(features.shape[0], -1, -1)
        with self._autocast(self.qformer_dtype):
            out = self.qformer(query_embeds=queries, encoder_hidden_states=features.to(self.qformer_dtype),
                               encoder_attention_mask=torch.ones(features.shape[:2], dtype=torch.long,
                                                                 device=self.device))
        return out.last_hidden_state

    def project(self, queries: torch.Tensor) -> torch.Tensor:
        """Q-Former outputs -> LLM input embeddings [B,32,H] (the trainable part)."""
        return self.llama_proj(queries.to(self.device, torch.float32)).to(self.llm_dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.encode_queries(images))

    # ------------------------------------------------------------------------------------------ text
    def tokenize_segment(self, text: str) -> list[int]:
        return tokenize_segment(self.tokenizer, text)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids.to(self.device))

    def build_inputs(self, image_embeds: torch.Tensor, prompts: list[str], answers: list[str]) -> dict:
        """Per sample: [BOS | prompt before <ImageHere> | 32 image embeddings | prompt after | answer + end_sym],
        each text segment tokenized alone without special tokens, right-padded to the longest sample.
        Labels are the answer token ids and -100 on BOS, prompt, image and padding."""
        n_img = image_embeds.shape[1]
        rows, labels = [], []
        for prompt, answer in zip(prompts, answers, strict=True):
            if prompt.count(IMAGE_PLACEHOLDER) != 1:
                raise ValueError(f"a prompt must contain {IMAGE_PLACEHOLDER} exactly once: {prompt!r}")
            before, after = prompt.split(IMAGE_PLACEHOLDER)
            before_ids, after_ids = self.tokenize_segment(before), self.tokenize_segment(after)
            answer_ids = self.tokenize_segment(answer + self.end_sym)[: self.cfg.max_txt_len]
            context = [self.tokenizer.bos_token_id] + before_ids + [None] * n_img + after_ids
            rows.append(context + answer_ids)
            labels.append([IGNORE_INDEX] * len(context) + answer_ids)
        length = max(len(r) for r in rows)
        batch = len(rows)
        ids = torch.full((batch, length), self.tokenizer.pad_token_id, dtype=torch.long)
        label_t = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        image_mask = torch.zeros((batch, length), dtype=torch.bool)
        for i, (row, lab) in enumerate(zip(rows, labels)):
            image_mask[i, : len(row)] = torch.tensor([t is None for t in row])
            ids[i, : len(row)] = torch.tensor([self.tokenizer.pad_token_id if t is None else t for t in row])
            label_t[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(row)] = 1
        embeds = self.embed_tokens(ids)
        # Image embeddings go where the placeholders are; masked_scatter keeps the graph to llama_proj.
        embeds = embeds.masked_scatter(image_mask.to(self.device)[..., None], image_embeds.to(embeds.dtype))
        return {"inputs_embeds": embeds, "attention_mask": attention.to(self.device),
                "labels": label_t.to(self.device), "image_mask": image_mask}

    def draw_prompts(self, n: int) -> list[str]:
        if not self.prompt_list:
            # No prompt file: the image alone precedes the answer (MiniGPT-4's first-stage layout).
            return [IMAGE_PLACEHOLDER] * n
        return [self.prompt_rng.choice(self.prompt_list) for _ in range(n)]

    # ------------------------------------------------------------------------------------------ training
    def forward(self, samples: dict) -> dict:
        queries = samples["queries"] if "queries" in samples else self.encode_queries(samples["image"])
        image_embeds = self.project(queries)
        answers = list(samples["text_input"])
        if samples.get("prompt") is not None:
            prompts = [self.prompt_template.format(p) for p in samples["prompt"]]
        else:
            prompts = self.draw_prompts(len(answers))
        inputs = self.build_inputs(image_embeds, prompts, answers)
        out = self.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                       labels=inputs["labels"], use_cache=False)
        return {"loss": out.loss, "num_answer_tokens": int((inputs["labels"] != IGNORE_INDEX).sum())}

    # ------------------------------------------------------------------------------------------ checkpoints
    def trainable_state_dict(self) -> dict:
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_projection(self, path: str) -> ckpt_io.LoadReport:
        require_path(path, "model.ckpt", "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection", "file")
        return ckpt_io.load_projection(self.llama_proj, path)

    def save_checkpoint(self, path: str, **extra) -> Path:
        """Trainable parameters only, in the `{"model": ...}` format the original code reads."""
        return ckpt_io.save_checkpoint(path, self.trainable_state_dict(), **extra)

    def parameter_counts(self) -> dict[str, int]:
        parts = {"visual_encoder": self.visual_encoder, "qformer": self.qformer, "llama_proj": self.llama_proj,
                 "llm": self.llm}
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        counts["query_tokens"] = self.query_tokens.numel()
        return counts
