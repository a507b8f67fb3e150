"""Image processors of docs/model.md: BLIP-2's CLIP normalisation, a random-resized crop for training and a
plain resize (no centre crop, so the whole lesion stays in view) for evaluation and chat."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from skingpt4.common import registry

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageTrainConfig:
    image_size: int = 224
    min_scale: float = 0.5
    max_scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))


@dataclass
class ImageEvalConfig:
    image_size: int = 224
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))


class _ImageProcessor:
    """RGB PIL image -> normalised float tensor [3, image_size, image_size]."""

    transform: transforms.Compose

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":  # load_image already gives RGB; a caller handing raw PIL images may not
            raise ValueError(f"{type(self).__name__} expects an RGB image, got mode {image.mode} "
                             "(read images with skingpt4.common.images.load_image)")
        return self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"


@registry.processors.register("blip2_image_train")
class Blip2ImageTrainProcessor(_ImageProcessor):
    Config = ImageTrainConfig

    def __init__(self, image_size: int = 224, min_scale: float = 0.5, max_scale: float = 1.0,
                 mean=CLIP_MEAN, std=CLIP_STD):
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got min_scale={min_scale}, max_scale={max_scale}")
        self.image_size = image_size
        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(image_size, scale=(min_scale, max_scale),
                                         interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(tuple(mean), tuple(std)),
        ])


@registry.processors.register("blip2_image_eval")
class Blip2ImageEvalProcessor(_ImageProcessor):
    Config = ImageEvalConfig

    def __init__(self, image_size: int = 224, mean=CLIP_MEAN, std=CLIP_STD):
        self.image_size = image_size
        self.transform = transforms.Compose([
            transforms.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(tuple(mean), tuple(std)),
        ])
