"""SkinGPT-4: frozen EVA-ViT-g + ln_vision + Q-Former read a skin photo; a trainable Linear(768 -> H) maps the
32 query embeddings into a frozen Llama-family LLM (Llama-2-13b-chat, H = 5120, in the paper). docs/model.md.

Read top to bottom: config -> the module (parts, trainable set) -> image encoding -> embedding a token layout
-> training forward (the trainable set: models/trainable.py). Building from a config (variants, weight files, the LLM) is
`skingpt4.models.build.build_model`; the prompt format and token layout are `skingpt4.prompting`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from skingpt4.common.precision import autocast, get_dtype, resolve_device
from skingpt4.models.lora import LoraSettings, set_adapter_dropout
from skingpt4.models.eva_vit import VisionConfig, build_eva_vit
from skingpt4.models.packing import pack_rows, packed_position_ids, padding_fraction
from skingpt4.models.qformer import QFormerConfig, build_qformer
from skingpt4.models.trainable import TrainableSet
from skingpt4.prompting import IGNORE_INDEX, IMAGE_SLOT, Layout, layout
from skingpt4.prompting.templates import ChatTemplate


@dataclass
class TokenizerConfig:
    # unk | eos | a token of the vocabulary (e.g. Llama-3's <|finetune_right_pad_id|>) | null: the tokenizer's own.
    # Padding is masked out by position, but templates that end answers with EOS need pad != eos.
    pad_token: Optional[str] = None


@dataclass
class SkinGPT4Config:
    variant: str = "llama2_13b_chat"         # skingpt4/models/variants/<variant>.yaml goes under your `model:` block
    template: str = "vicuna_v0"              # the prompt format (registry.chat_templates), named by the variant
    llm_hidden_size: Optional[int] = None    # the variant's LLM width (the projection's output), for messages
    synthetic: bool = False                  # a model of the synthetic tiny world (its answers say so), not of skin
    # --- weights, all local paths ---
    vit_model: Optional[str] = None          # eva_vit_g.pth (bare EVA state dict)
    q_former_model: Optional[str] = None     # blip2_pretrained_flant5xxl.pth (LAVIS {"model": ...})
    blip2_hf_dir: Optional[str] = None       # or: a transformers BLIP-2 snapshot dir (vision + Q-Former from it)
    llm_model: Optional[str] = None          # a Llama-family transformers directory
    ckpt: Optional[str] = None               # a SkinGPT-4 / MiniGPT-4 projection checkpoint (.pth)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    # --- architecture ---
    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    max_txt_len: int = 160                   # training answers are cut to this many tokens
    # --- placement and precision (skingpt4.common.precision) ---
    device: str = "auto"                     # auto | cpu | cuda | cuda:N
    vit_precision: str = "auto"              # auto (fp16 on CUDA as the original, fp32 on CPU) | fp32 | bf16 | fp16
    qformer_precision: str = "fp32"
    llm_precision: str = "auto"              # auto (fp16 on CUDA as the original, fp32 on CPU) | fp32 | bf16 | fp16
    llm_quantization: str = "none"           # none | 8bit | 4bit (bitsandbytes, CUDA only)
    # sdpa (PyTorch scaled_dot_product_attention: flash / memory-efficient kernels on CUDA) | eager (the reference
    # matmul-softmax) | flash_attention_2 (LLM only, needs the flash-attn package and CUDA; ViT and Q-Former use sdpa)
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False     # recompute LLM activations in backward (less memory, ~30% slower)
    # --- adapters on the frozen LLM (models/lora.py); r: 0 = none, the projection alone trains ---
    lora: LoraSettings = field(default_factory=LoraSettings)


class SkinGPT4(TrainableSet, nn.Module):
    # The trainable set (models/trainable.py: requires_grad, saving and loading all follow it). Only the projection
    # trains (paper), plus LoRA adapters in the LLM when `model.lora.r > 0`; everything else is frozen and stays in
    # eval mode (see train()).
    TRAINABLE_PREFIXES = ("llama_proj.",)

    def __init__(self, cfg: DictConfig, template: ChatTemplate, tokenizer, llm: nn.Module):
        """Parts with their architecture from `cfg`; the frozen weights are loaded by `build_model`."""
        super().__init__()
        self.cfg = cfg
        self.template = template
        self.tokenizer = tokenizer
        self.device = resolve_device(cfg.device)
        self.vit_dtype = get_dtype(cfg.vit_precision, self.device, "model.vit_precision")
        self.qformer_dtype = get_dtype(cfg.qformer_precision, self.device, "model.qformer_precision")
        self.llm_dtype = get_dtype(cfg.llm_precision, self.device, "model.llm_precision")
        self.visual_encoder = build_eva_vit(VisionConfig(**cfg.vision), fused_attn=cfg.attn_implementation != "eager")
        self.qformer = build_qformer(QFormerConfig(**cfg.qformer), cfg.vision.width,
                                     attn_implementation="eager" if cfg.attn_implementation == "eager" else "sdpa")
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.qformer.num_query_tokens, cfg.qformer.hidden_size))
        self.llm = llm
        self.llama_proj = nn.Linear(cfg.qformer.hidden_size, llm.config.hidden_size)
        self.apply_trainable_set()

    def place(self) -> "SkinGPT4":
        """Move the parts to the device in their precisions (the LLM was loaded there already)."""
        self.visual_encoder.to(self.device, self.vit_dtype)
        self.visual_encoder.norm.float()  # ln_vision keeps fp32 weights; it computes in fp32
        self.qformer.to(self.device, self.qformer_dtype)
        self.query_tokens.data = self.query_tokens.data.to(self.device, self.qformer_dtype)
        self.llama_proj.to(self.device, torch.float32)  # trained in fp32; its output is cast to the LLM dtype
        return self.train(False)

    def train(self, mode: bool = True) -> "SkinGPT4":
        super().train(mode)
        for frozen in (self.visual_encoder, self.qformer, self.llm):
            frozen.eval()  # no dropout / drop-path in frozen parts, as in the original
        if self.cfg.lora.r:
            set_adapter_dropout(self.llm, mode)
        return self

    # ------------------------------------------------------------------------------------------ images
    @torch.no_grad()
    def encode_queries(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,224,224] -> Q-Former outputs [B,32,768]: the frozen part, cacheable."""
        images = images.to(self.device, self.vit_dtype)
        with autocast(self.device, self.vit_dtype):
            features = self.visual_encoder.forward_features(images)  # includes ln_vision
        queries = self.query_tokens.expand(features.shape[0], -1, -1)
        with autocast(self.device, self.qformer_dtype):
            out = self.qformer(query_embeds=queries, encoder_hidden_states=features.to(self.qformer_dtype),
                               encoder_attention_mask=torch.ones(features.shape[:2], dtype=torch.long,
                                                                 device=self.device))
        return out.last_hidden_state

    def project(self, queries: torch.Tensor) -> torch.Tensor:
        """Q-Former outputs -> LLM input embeddings [B,32,H] (the trainable part)."""
        return self.llama_proj(queries.to(self.device, torch.float32)).to(self.llm_dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.encode_queries(images))

    # ------------------------------------------------------------------------------------------ layouts
    def layout(self, history: Sequence[tuple[str, str]], question: Optional[str], answer: Optional[str] = None,
               style: str = "chat") -> Layout:
        """This model's token layout of a conversation (its template, tokenizer and image width)."""
        return layout(self.template, self.tokenizer, history, question, answer=answer, style=style,
                      n_image=self.cfg.qformer.num_query_tokens, max_answer_tokens=self.cfg.max_txt_len)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids.to(self.device))

    def embed(self, rows: Sequence[Sequence[int]], image_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows (IMAGE_SLOT at the image positions) + image embeddings [B,32,H] -> input embeddings [B,T,H]
        right-padded to the longest row, and the attention mask [B,T]. The one place where image embeddings
        enter the LLM input, for training and chat alike."""
        batch, length = len(rows), max(len(r) for r in rows)
        ids = torch.full((batch, length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        image_mask = torch.zeros((batch, length), dtype=torch.bool)
        for i, row in enumerate(rows):
            row_t = torch.tensor(row, dtype=torch.long)
            image_mask[i, : len(row)] = row_t == IMAGE_SLOT
            ids[i, : len(row)] = row_t.masked_fill(row_t == IMAGE_SLOT, self.tokenizer.pad_token_id)
            attention[i, : len(row)] = 1
        embeds = self.embed_tokens(ids)
        # masked_scatter keeps the graph to llama_proj.
        embeds = embeds.masked_scatter(image_mask.to(self.device)[..., None], image_embeds.to(embeds.dtype))
        return embeds, attention.to(self.device)

    def build_inputs(self, image_embeds: torch.Tensor, layouts: Sequence[Layout], pack_tokens: int = 0) -> dict:
        """LLM inputs of a batch of layouts; labels -100 on BOS, prompt, image and padding.

        pack_tokens 0: one right-padded row per layout with an attention mask. pack_tokens > 0: the layouts packed
        end to end into rows of at most that many positions (models/packing.py), `position_ids` restarting at
        every sample and no attention mask (attention stays inside each sample)."""
        lengths = [len(lay.tokens) for lay in layouts]
        rows = pack_rows(lengths, pack_tokens) if pack_tokens else [[i] for i in range(len(layouts))]
        order = [i for row in rows for i in row]
        token_rows = [[t for i in row for t in layouts[i].tokens] for row in rows]
        embeds, attention = self.embed(token_rows, image_embeds[order] if pack_tokens else image_embeds)
        labels = torch.full(attention.shape, IGNORE_INDEX, dtype=torch.long)
        image_mask = torch.zeros(attention.shape, dtype=torch.bool)
        for r, row in enumerate(rows):
            row_labels = [label for i in row for label in layouts[i].labels]
            labels[r, : len(row_labels)] = torch.tensor(row_labels)
            image_mask[r, : len(row_labels)] = torch.tensor(token_rows[r]) == IMAGE_SLOT
        inputs = {"inputs_embeds": embeds, "attention_mask": attention, "labels": labels.to(self.device),
                  "image_mask": image_mask, "padding_fraction": padding_fraction(lengths, rows)}
        if pack_tokens:
            inputs["attention_mask"] = None
            inputs["position_ids"] = packed_position_ids(rows, lengths).to(self.device)
        return inputs

    # ------------------------------------------------------------------------------------------ training
    def forward(self, samples: dict, pack_tokens: int = 0) -> dict:
        """samples: `image` [B,3,S,S] or cached `queries` [B,32,768], `text_input` (answers) and optionally
        `prompt` (one prompt line per item, None: the image alone precedes the answer). pack_tokens > 0: run the
        LLM on packed rows of at most that many positions (`build_inputs`; same loss, no padding positions)."""
        queries = samples["queries"] if "queries" in samples else self.encode_queries(samples["image"])
        image_embeds = self.project(queries)
        answers = list(samples["text_input"])
        prompts = samples.get("prompt") or [None] * len(answers)
        layouts = [self.layout((), p, answer=a, style="train") for p, a in zip(prompts, answers, strict=True)]
        inputs = self.build_inputs(image_embeds, layouts, pack_tokens=pack_tokens)
        out = self.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                       position_ids=inputs.get("position_ids"), labels=inputs["labels"], use_cache=False)
        return {"loss": out.loss, "num_answer_tokens": int((inputs["labels"] != IGNORE_INDEX).sum()),
                "positions": inputs["inputs_embeds"].shape[0] * inputs["inputs_embeds"].shape[1],
                "padding_fraction": inputs["padding_fraction"]}

    def parameter_counts(self) -> dict[str, int]:
        parts = {"visual_encoder": self.visual_encoder, "qformer": self.qformer, "llama_proj": self.llama_proj,
                 "llm": self.llm}
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        counts["query_tokens"] = self.query_tokens.numel()
        return counts
