"""Pretraining the tiny Q-Former on the synthetic world (BLIP-2's recipe: a frozen image encoder, a trained
Q-Former), and the probe that shows what the query outputs carry.

BLIP-2's Q-Former was pretrained on real photos over a frozen EVA-ViT, so its 32 query outputs describe what a
photo shows. The tiny one gets the same property from the synthetic world (`world.py`): the tiny vision
encoder keeps its seeded random weights (frozen, as EVA is), and the Q-Former and its query tokens learn, on
freshly drawn images, to make the mean of the query outputs predict what each image shows through linear heads
that are then thrown away: the concept glyphs of an image (a softmax spread over the glyphs present), for
SKINCON-style images and for Dermnet-style lesions alike, and, weighted down, the skin type. The Q-Former is never
told a lesion's class: it sees concepts, and the class is a combination of them (learnt later, by the
projection). From then on the Q-Former is frozen too.

`centroid_probe` is the check: a nearest-centroid classifier on the (standardised, query-averaged) Q-Former
outputs, fitted on one set of images and scored on a held-out set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from skingpt4.tiny import world
from skingpt4.models.eva_vit import VisionConfig, build_eva_vit
from skingpt4.models.qformer import QFormerConfig, build_qformer
from skingpt4.processors.image import Blip2ImageEvalProcessor


SKIN_WEIGHT = 0.1  # the skin type is easy to see; at full weight it crowds out the concept glyphs


@dataclass
class EncoderRecipe:
    images: int = 1200         # drawn once; their (frozen) vision features are computed once
    lesion_share: float = 0.5  # Dermnet-style lesions; the rest are SKINCON-style concept-glyph images
    steps: int = 500           # optimisation steps of the Q-Former
    batch_size: int = 32
    lr: float = 5e-3
    draw_size: int = 256       # images are drawn at make_synthetic's default size, then resized like any photo


class TinyEncoders(nn.Module):
    """Vision encoder (with ln_vision as its final norm), Q-Former and query tokens: the frozen front end."""

    def __init__(self, vision: VisionConfig, qformer: QFormerConfig):
        super().__init__()
        self.visual_encoder = build_eva_vit(vision)
        self.qformer = build_qformer(qformer, vision.width)
        self.query_tokens = nn.Parameter(torch.randn(1, qformer.num_query_tokens, qformer.hidden_size) * 0.02)
        with torch.no_grad():
            # ln_vision away from its default init, so that a load that misses it shows
            self.visual_encoder.norm.weight.copy_(1 + 0.1 * torch.randn(vision.width))
            self.visual_encoder.norm.bias.copy_(0.1 * torch.randn(vision.width))
            # a CLS token of unit scale (timm starts it near 0): every token then reaches ln_vision with a variance
            # far above its eps, as EVA-ViT-g's do, so an eps that differs (the BLIP-2 export) changes nothing
            self.visual_encoder.cls_token.copy_(torch.randn_like(self.visual_encoder.cls_token))

    def read(self, features: torch.Tensor) -> torch.Tensor:
        """Vision features [B,257,width] -> query outputs [B,32,hidden]."""
        mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        return self.qformer(query_embeds=self.query_tokens.expand(features.shape[0], -1, -1),
                            encoder_hidden_states=features, encoder_attention_mask=mask).last_hidden_state

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] -> query outputs [B,32,hidden], as SkinGPT4.encode_queries computes them."""
        return self.read(self.visual_encoder.forward_features(images))


@dataclass
class _Drawn:
    features: torch.Tensor   # [N,257,width] frozen vision features
    concepts: torch.Tensor   # [N,48] multi-hot glyphs
    skin: torch.Tensor       # [N] skin type - 1


@torch.no_grad()
def _draw(encoders: TinyEncoders, recipe: EncoderRecipe, rng: np.random.Generator, processor) -> _Drawn:
    images, skin = [], []
    concepts = torch.zeros(recipe.images, world.N_CONCEPTS)
    looks = world.folder_looks()
    for i in range(recipe.images):
        skin_type = int(rng.integers(1, 7))
        skin.append(skin_type - 1)
        if rng.random() < recipe.lesion_share:
            label, pattern = looks[int(rng.integers(0, len(looks)))]
            image, shown = world.lesion(rng, recipe.draw_size, skin_type, label, pattern)
        else:
            shown = sorted(int(c) for c in rng.choice(world.N_CONCEPTS, size=int(rng.integers(1, 4)), replace=False))
            image = world.concept_image(rng, recipe.draw_size, skin_type, shown)
        concepts[i, shown] = 1.0
        images.append(processor(image))
    pixels = torch.stack(images)
    features = torch.cat([encoders.visual_encoder.forward_features(pixels[i:i + 64])
                          for i in range(0, len(pixels), 64)])
    return _Drawn(features, concepts, torch.tensor(skin))


def pretrain_encoders(vision: VisionConfig, qformer: QFormerConfig, recipe: EncoderRecipe, seed: int,
                      progress: Optional[Callable[[int, float], None]] = None) -> TinyEncoders:
    """Seeded random encoders whose Q-Former (and query tokens) then learn to see the world; eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoders = TinyEncoders(vision, qformer).eval()
    drawn = _draw(encoders, recipe, rng, Blip2ImageEvalProcessor(image_size=vision.image_size))
    n_concept = world.N_CONCEPTS
    head = nn.Linear(qformer.hidden_size, n_concept + len(world.SKIN_TONES))
    params = list(encoders.qformer.parameters()) + [encoders.query_tokens] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.steps,
                                                   pct_start=0.1)
    order = torch.Generator().manual_seed(seed)
    encoders.qformer.train()
    for step in range(recipe.steps):
        idx = torch.randint(0, recipe.images, (recipe.batch_size,), generator=order)
        logits = head(encoders.read(drawn.features[idx]).mean(1))
        concepts = drawn.concepts[idx]
        loss = SKIN_WEIGHT * nn.functional.cross_entropy(logits[:, n_concept:], drawn.skin[idx])
        log_p = torch.log_softmax(logits[:, :n_concept], dim=1)
        loss = loss - ((log_p * concepts).sum(1) / concepts.sum(1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, loss.item())
    return encoders.eval()


# ---------------------------------------------------------------------------------------------- probe
def pooled(queries: torch.Tensor) -> torch.Tensor:
    """[N,32,hidden] query outputs -> [N,hidden], the mean over the queries."""
    return queries.float().mean(1)


def centroid_probe(train: torch.Tensor, train_labels: Sequence, test: torch.Tensor, test_labels: Sequence) -> float:
    """Held-out accuracy of a nearest-centroid classifier on query-averaged features, standardised with the
    training set's mean and spread. `train`/`test`: [N,32,hidden] or [N,hidden]."""
    a = pooled(train) if train.dim() == 3 else train.float()
    b = pooled(test) if test.dim() == 3 else test.float()
    if not len(a) or not len(b):
        raise ValueError("the probe needs at least one training and one test image")
    mean, spread = a.mean(0), a.std(0, unbiased=False) + 1e-6
    a, b = (a - mean) / spread, (b - mean) / spread
    classes = sorted(set(train_labels))
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for c in train_labels])
    centroids = torch.stack([a[labels == i].mean(0) for i in range(len(classes))])
    predicted = torch.cdist(b, centroids).argmin(1).tolist()
    return float(np.mean([classes[p] == t for p, t in zip(predicted, test_labels)]))


@torch.no_grad()
def probe_world(encoders: Callable[[torch.Tensor], torch.Tensor], image_size: int, seed: int,
                train_per_look: int = 6, test_per_look: int = 4, draw_size: int = 256) -> dict[str, float]:
    """Held-out nearest-centroid accuracy on fresh images: the 16 classes of lesion images (each in the
    arrangement of one of its folders), and the 48 concept glyphs (one glyph per image). Chance: 1/16 and 1/48."""
    rng = np.random.default_rng(seed)
    processor = Blip2ImageEvalProcessor(image_size=image_size)
    looks = world.folder_looks()
    classes = sorted({label for label, _ in looks})
    patterns = {c: [p for label, p in looks if label == c] for c in classes}

    def draw_class(k: int):
        label = classes[k]
        pattern = patterns[label][int(rng.integers(0, len(patterns[label])))]
        return world.lesion(rng, draw_size, int(rng.integers(1, 7)), label, pattern)[0]

    result = {}
    for name, n_looks, draw in (
            ("classes", len(classes), draw_class),
            ("concepts", world.N_CONCEPTS, lambda k: world.concept_image(rng, draw_size, int(rng.integers(1, 7)), [k]))):
        sets = []
        for per_look in (train_per_look, test_per_look):
            labels = [k for k in range(n_looks) for _ in range(per_look)]
            images = torch.stack([processor(draw(k)) for k in labels])
            sets += [torch.cat([encoders(images[i:i + 64]) for i in range(0, len(images), 64)]), labels]
        result[name] = centroid_probe(*sets)
    return result
