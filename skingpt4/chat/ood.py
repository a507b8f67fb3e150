"""Is this image like the ones the differential was calibrated on? (docs/inference.md, "Differential").

A calibrated probability is only honest for images like the validation split it was fitted on: a blank photo or
pure noise can still get one class at 99%. Three checks, all cheap beside the scoring itself:
- blank: the photo's pixels barely vary (per-channel standard deviation below `BLANK_PIXEL_STD`);
- noise: the pixels vary strongly (standard deviation above `NOISE_PIXEL_STD`) but neighbouring pixels are almost
  uncorrelated (below `NOISE_CORRELATION`): the image holds no shapes at all. Photos are smooth at the pixel
  scale; the tiny world's drawings measured at least 0.41 (96 images), uniform RGB noise about 0. Faint grain on
  an even background is not noise here: its amplitude is small;
- out of distribution: the image's feature (the mean of its 32 projected query tokens, L2-normalised, then
  count-sketched to `SKETCH_DIM` numbers and normalised again, so the stored reference is small whatever the LLM's
  width) is farther from its nearest validation image than `threshold`, the `QUANTILE` of the validation images'
  own leave-one-out nearest-neighbour distances. With the 95th percentile about 5% of images like the validation
  split abstain on this ground; the tiny world's figures are in docs/evaluation.md, "Differential".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image

SKETCH_DIM = 256
SKETCH_SEED = 0
QUANTILE = 0.95
BLANK_PIXEL_STD = 0.01   # in [0, 1] pixel units (2.5 grey levels): a uniform image, whatever its colour
NOISE_CORRELATION = 0.3  # RGB noise: about 0
NOISE_PIXEL_STD = 0.1    # uniform RGB noise: 0.29


def pixel_std(image: Image.Image | np.ndarray) -> float:
    """The largest per-channel standard deviation of the RGB pixels, in [0, 1] units."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return float((pixels / 255.0).reshape(-1, pixels.shape[-1]).std(axis=0).max())


def is_blank(image: Image.Image | np.ndarray) -> bool:
    return pixel_std(image) < BLANK_PIXEL_STD


def neighbour_correlation(image: Image.Image | np.ndarray) -> float:
    """The mean correlation of each pixel with its right and its lower neighbour, over the RGB channels (1 for a
    smooth image, about 0 for noise); 1 for a channel that does not vary."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    values = []
    for c in range(pixels.shape[-1]):
        channel = pixels[..., c]
        for a, b in ((channel[:, :-1], channel[:, 1:]), (channel[:-1, :], channel[1:, :])):
            a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
            norm = np.sqrt((a * a).sum() * (b * b).sum())
            values.append(float((a * b).sum() / norm) if norm > 0 else 1.0)
    return float(np.mean(values))


def pixel_check(image: Image.Image | np.ndarray) -> Optional[dict]:
    """{"check": "blank" | "noise", and the measured value} when the photo itself shows nothing, else None."""
    std = pixel_std(image)
    if std < BLANK_PIXEL_STD:
        return {"check": "blank", "pixel_std": round(std, 6)}
    correlation = neighbour_correlation(image)
    if std > NOISE_PIXEL_STD and correlation < NOISE_CORRELATION:
        return {"check": "noise", "neighbour_correlation": round(correlation, 6)}
    return None


def _sketch(width: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The count sketch of `width` inputs into `dim` buckets: each input's bucket and sign, fixed by the seed."""
    generator = torch.Generator().manual_seed(seed)
    buckets = torch.randint(0, dim, (width,), generator=generator)
    signs = torch.randint(0, 2, (width,), generator=generator).double() * 2 - 1
    return buckets, signs


def image_features(image_embeds: torch.Tensor, dim: int = SKETCH_DIM, seed: int = SKETCH_SEED) -> torch.Tensor:
    """Projected query tokens [B, 32, H] -> [B, dim] unit vectors (the images' reference features)."""
    mean = image_embeds.detach().double().cpu().mean(dim=1)
    mean = torch.nn.functional.normalize(mean, dim=-1)
    buckets, signs = _sketch(mean.shape[-1], dim, seed)
    sketched = torch.zeros(mean.shape[0], dim, dtype=torch.float64).index_add_(1, buckets, mean * signs)
    return torch.nn.functional.normalize(sketched, dim=-1)


def leave_one_out_threshold(features: torch.Tensor, quantile: float = QUANTILE) -> float:
    """The `quantile` of each reference feature's distance to its nearest other reference feature."""
    if len(features) < 2:
        raise ValueError("at least 2 reference images are needed for a leave-one-out distance")
    distances = torch.cdist(features.double(), features.double())
    distances.fill_diagonal_(float("inf"))
    return float(torch.quantile(distances.min(dim=1).values, quantile))


@dataclass(frozen=True)
class OODReference:
    """The validation split's features and the distance beyond which an image counts as out of distribution."""

    features: torch.Tensor   # [N, dim] unit vectors
    threshold: float
    dim: int = SKETCH_DIM
    seed: int = SKETCH_SEED
    quantile: float = QUANTILE

    @classmethod
    def fit(cls, features: torch.Tensor, quantile: float = QUANTILE) -> "OODReference":
        """From the validation images' `image_features` [N, SKETCH_DIM]."""
        return cls(features.double(), leave_one_out_threshold(features, quantile), quantile=quantile)

    def distance(self, image_embeds: torch.Tensor) -> float:
        """The distance of one image ([1, 32, H]) to its nearest reference image."""
        feature = image_features(image_embeds, self.dim, self.seed)
        return float(torch.cdist(feature, self.features.double()).min())

    def as_json(self) -> dict:
        return {"dim": self.dim, "seed": self.seed, "quantile": self.quantile, "threshold": self.threshold,
                "features": [[round(v, 6) for v in row] for row in self.features.tolist()]}
