"""Projection-only training throughput through the training components themselves (data plan + DataLoader, the
recipe's TrainStep, AdamW, autocast and loss scaling as the runner does them), with the step time split into
data / vision / LLM forward+backward / optimizer, with live images (train transform) or cached frozen features
(eval transform, `run.cache_frozen_features`), padded or packed batches."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf
from PIL import Image

from benchmarks.timing import PeakMemory, median_time, sync
from skingpt4.common.precision import DTYPES, autocast
from skingpt4.datasets import build_datasets, collate
from skingpt4.tiny.assets import tiny_corpus
from skingpt4.prompting.prompt_files import read_prompt_lines
from skingpt4.prompting.tokenize import tokenize_segment
from skingpt4.runners import DistInfo
from skingpt4.runners.data import Source, as_sources, build_train_loader
from skingpt4.runners.feature_cache import cache_queries
from skingpt4.runners.optim import adamw_kernel, build_optimizer
from skingpt4.runners.recipe import TrainStep
from skingpt4.runners.distributed import to_device

PROMPTS = "prompts/step1.txt"


def write_training_folder(root: Path, tokenizer, count: int = 64, min_tokens: int = 80,
                          max_tokens: int = 160) -> Path:
    """A prepared folder (filter_cap.json + image/) of `count` 448x448 JPEGs whose captions are min..max tokens
    long (the paper's answers are cut at 160): varied lengths, as real captions, so padding matters."""
    words = tiny_corpus().split()
    rng = random.Random(0)
    (root / "image").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        target, caption, start = rng.randint(min_tokens, max_tokens), [], rng.randrange(len(words))
        while len(tokenize_segment(tokenizer, " ".join(caption))) < target:
            caption.append(words[(start + len(caption)) % len(words)])
        image = Image.new("RGB", (448, 448), (200 - i % 50, 140 + i % 60, 120))
        image.paste((90 + i % 100, 40, 30), (100 + i % 70, 120, 260, 300))
        image.save(root / "image" / f"img_{i:03d}.jpg", quality=90)
        records.append({"image_id": f"img_{i:03d}", "caption": " ".join(caption)})
    (root / "filter_cap.json").write_text(json.dumps({"annotations": records}))
    return root


def llm_matmul_params(llm) -> int:
    """Parameters that take part in a matmul per token: decoder layers and the output head (not the lookup)."""
    body = sum(p.numel() for p in llm.model.layers.parameters())
    return body + llm.get_output_embeddings().weight.numel()


def flops_per_sample(model, tokens: float, live: bool, vit_flops: float) -> float:
    """LLM forward (2 N T) + input-gradient backward (2 N T, no weight gradients: the LLM is frozen) + attention
    scores (4 L T^2 H forward, twice that backward), + the ViT forward with live images."""
    config = model.llm.config
    llm = 4 * llm_matmul_params(model.llm) * tokens + 12 * config.num_hidden_layers * tokens ** 2 * config.hidden_size
    return llm + (vit_flops if live else 0.0)


def measure_training(model, data: Path, *, batch: int, cached: bool, pack_tokens: int, optimizer_impl: str,
                     precision: str, steps: int, warmup: int, num_workers: int, vit_flops: float,
                     transform: Optional[str] = None) -> dict:
    """One training configuration timed step by step (`transform`: the image processor; default the eval transform
    with cached features, the train transform with live images)."""
    device = model.device
    transform = transform or ("blip2_image_eval" if cached else "blip2_image_train")
    sources = as_sources(build_datasets(OmegaConf.create({"pairs": {
        "builder": "image_text_pairs", "storage": str(data), "vis_processor": {"name": transform,
                                                                             "image_size": model.cfg.vision.image_size},
        "text_processor": {"name": "blip_caption"}}})))
    cache_s = 0.0
    if cached:
        start = time.perf_counter()
        sources = [Source(s.name, cache_queries(model, s, batch, DistInfo(0, 1, 0, device)), s.ratio) for s in sources]
        cache_s = time.perf_counter() - start
    train_step = TrainStep(read_prompt_lines(PROMPTS), pack_tokens)
    optimizer = build_optimizer(model, 1e-4, 0.05, (0.9, 0.999), optimizer_impl)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loader = build_train_loader(sources, collate, batch_size=batch, world_size=1, rank=0, seed=0,
                                total_micro_steps=warmup + steps, start_micro_step=0, num_workers=num_workers,
                                pin_memory=device.type == "cuda")
    model.train()
    split = {"data": 0.0, "vision": 0.0, "llm_fwd_bwd": 0.0, "optimizer": 0.0}
    samples, real_tokens, positions, padding, losses = 0, 0.0, 0, [], []
    batches = iter(loader)
    with PeakMemory(device) as memory:
        for step in range(warmup + steps):
            t0 = time.perf_counter()
            item = to_device(next(batches)["batch"], device)
            t1 = time.perf_counter()
            if "queries" not in item:
                item["queries"] = model.encode_queries(item["image"])
            sync(device)
            t2 = time.perf_counter()
            with autocast(device, DTYPES[precision]):
                out = train_step(model, item)
            scaler.scale(out["loss"]).backward()
            sync(device)
            t3 = time.perf_counter()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            sync(device)
            t4 = time.perf_counter()
            if step >= warmup:
                for key, seconds in zip(split, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    split[key] += seconds
                size = len(item["text_input"])
                samples += size
                positions += out["positions"]
                real_tokens += out["positions"] * (1 - out["padding_fraction"])
                padding.append(out["padding_fraction"])
                losses.append(float(out["loss"].detach()))
    model.train(False)
    wall = sum(split.values())
    tokens = real_tokens / samples
    layout = f"packed{pack_tokens}" if pack_tokens else "padded"
    return {"batch": batch, "images": "cached" if cached else "live", "layout": layout,
            "optimizer": "fused" if optimizer.param_groups[0]["fused"] else
                         ("foreach" if optimizer.param_groups[0]["foreach"] else "torch default"),
            "precision": precision, "samples_per_s": samples / wall, "step_ms": 1000 * wall / steps,
            "split_ms": {k: 1000 * v / steps for k, v in split.items()}, "tokens_per_sample": tokens,
            "positions_per_sample": positions / samples, "padding_fraction": sum(padding) / len(padding),
            "flops_per_sample": flops_per_sample(model, tokens, not cached, vit_flops),
            "peak_mib": memory.peak_mib, "cache_build_s": cache_s, "last_loss": losses[-1],
            "items": sum(len(s.dataset) for s in sources)}


def optimizer_kernels(model, repeats: int) -> list[dict]:
    """AdamW step time of the projection's parameters (768 x H + H) per kernel, and how far each kernel's
    parameters end from the for-loop reference after `repeats` identical steps."""
    device = model.device
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator(device="cpu").manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator).to(device) for p in params]
    results, finals = [], {}
    for impl in ("for_loop", "foreach", "fused"):
        try:
            kernel = adamw_kernel(impl, params)
        except Exception as err:  # a torch without this kernel on this device
            results.append({"optimizer": impl, "skipped": str(err)})
            continue
        copies = [p.detach().clone().requires_grad_(True) for p in params]
        optimizer = torch.optim.AdamW(copies, lr=1e-3, weight_decay=0.05, **kernel)
        for copy, grad in zip(copies, grads):
            copy.grad = grad.clone()
        seconds = median_time(optimizer.step, device, repeats=repeats, warmup=2)
        finals[impl] = copies
        results.append({"optimizer": impl, "step_ms": seconds * 1000})
    for row in results:
        if row["optimizer"] in finals and "for_loop" in finals:
            row["max_abs_diff_vs_for_loop"] = max(float((a - b).detach().abs().max()) for a, b in
                                                  zip(finals[row["optimizer"]], finals["for_loop"]))
    return results
