"""Synthetic-world case folders for the calibration and abstention tests: images drawn exactly as the tiny world's
Dermnet images are (skingpt4/tiny/world.py, the world the tiny encoders were pretrained on), in the Dermnet folder
layout (the folder names give the labels), plus the images that must abstain (blank, RGB noise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from skingpt4.common.class_table import dermnet_mapping
from skingpt4.tiny.world import lesion_image

IMAGE_SIZE = 256   # the size the tiny world is drawn at (make_synthetic, the encoders' pretraining)


def dermnet_folder(root: Path, per_folder: int, seed: int, folders: int = 8) -> Path:
    """`folders` Dermnet folders (one per class, the first of each class in sorted order) x `per_folder` images."""
    names = sorted(dermnet_mapping()["folders"])
    mapping = dermnet_mapping()["folders"]
    chosen, seen = [], set()
    for index, name in enumerate(names):
        if mapping[name] and mapping[name] not in seen:
            seen.add(mapping[name])
            chosen.append((index, name))
    rng = np.random.default_rng(seed)
    for index, name in chosen[:folders]:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            lesion_image(rng, IMAGE_SIZE, int(rng.integers(1, 7)), index).save(root / name / f"case-{i}.jpg", quality=92)
    return root


def blank_image(colour=(128, 128, 128)) -> Image.Image:
    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), colour)


def noise_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
