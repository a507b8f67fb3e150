"""The synthetic world of the tiny model: how a label looks in a synthetic skin photo.

One definition, used both by `data_prep/make_synthetic.py` (which writes the synthetic datasets) and by the
tiny asset build (which pretrains the tiny vision encoder and Q-Former on freshly drawn images of the same
world, as BLIP-2's encoders were pretrained on real photos). docs/model.md describes the world.

Every image is a skin-tone background (set by the Fitzpatrick type, 1-6, with pixel noise) with:
  - a Dermnet-style lesion: each of the 23 Dermnet folders has its own lesion colour (12 hues x 2
    brightness levels) and pattern (dots, rings, blob, stripes), drawn at a random place and size; or
  - SKINCON-style concept glyphs: each of the 48 concepts is one coloured, textured shape (8 colours x 6
    shapes, each shape with its own fill texture: solid, stripes, ...), one glyph per concept in its own
    quadrant (at most 4 concepts). The texture makes the shape visible at the scale of one ViT patch.
Drawing is seeded by the caller's `numpy.random.Generator`: the same generator state gives the same pixels.
"""
from __future__ import annotations

import colorsys
import numpy as np
from PIL import Image, ImageDraw

SKIN_TONES = {1: (250, 222, 196), 2: (236, 192, 158), 3: (214, 168, 124), 4: (186, 128, 90), 5: (132, 84, 54),
              6: (84, 52, 34)}
CONCEPT_COLORS = [(200, 30, 30), (30, 150, 40), (30, 60, 200), (235, 205, 20), (140, 40, 170), (15, 15, 15),
                  (245, 245, 245), (240, 130, 20)]
SHAPES = ("disk", "square", "triangle", "ring", "cross", "diamond")
FILLS = ("solid", "horizontal stripes", "vertical stripes", "checks", "dots", "diagonal stripes")  # one per shape
PATTERNS = ("dots", "rings", "blob", "stripes")
# The doctors' note of a synthetic notes image (data_prep/make_synthetic.py writes it; the tiny LLM's corpus says
# it the same way).
NOTE_CAPTION = ("The image shows {phrase}. The affected skin shows a {pattern} pattern. A dermatologist should "
                "confirm the diagnosis and advise on treatment.")
N_FOLDERS = 23                                   # Dermnet folders (sorted names index the looks)
N_CONCEPTS = len(SHAPES) * len(CONCEPT_COLORS)   # 48 SKINCON concepts (header order indexes the glyphs)


# ---------------------------------------------------------------------------------------------- drawing
def skin_background(rng: np.random.Generator, size: int, skin_type: int) -> Image.Image:
    base = np.array(SKIN_TONES[skin_type], dtype=np.float32)
    noise = rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color) -> None:
    x0, y0, x1, y1 = box
    cx, cy, w = (x0 + x1) // 2, (y0 + y1) // 2, x1 - x0
    if shape == "disk":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "ring":
        draw.ellipse(box, outline=color, width=max(3, w // 6))
    elif shape == "cross":
        draw.rectangle((x0, cy - w // 6, x1, cy + w // 6), fill=color)
        draw.rectangle((cx - w // 6, y0, cx + w // 6, y1), fill=color)
    else:  # diamond
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)


def fill_mask(fill: str, size: int) -> np.ndarray:
    """Boolean [size, size] texture: where a glyph of this fill is painted (period ~ size / 32)."""
    period = max(4, size // 32)
    y, x = np.mgrid[0:size, 0:size]
    on = {"solid": np.ones((size, size), bool),
          "horizontal stripes": (y % period) < period // 2,
          "vertical stripes": (x % period) < period // 2,
          "checks": ((x // period + y // period) % 2) == 0,
          "dots": ((x % period) < period // 2) & ((y % period) < period // 2),
          "diagonal stripes": ((x + y) % period) < period // 2}
    return on[fill]


def concept_image(rng: np.random.Generator, size: int, skin_type: int, concepts: list[int]) -> Image.Image:
    """One glyph per concept index (shape and fill = index % 6, colour = index // 6), one per quadrant, jittered."""
    if len(concepts) > 4:
        raise ValueError(f"at most 4 concepts fit one image (one per quadrant), got {len(concepts)}")
    img = np.asarray(skin_background(rng, size, skin_type)).copy()
    cells = rng.permutation(4)
    half = size // 2
    for k, cell in zip(concepts, cells):
        side = int(rng.integers(half * 6 // 10, half * 9 // 10))
        x = (cell % 2) * half + int(rng.integers(0, half - side + 1))
        y = (cell // 2) * half + int(rng.integers(0, half - side + 1))
        shape = Image.new("L", (size, size), 0)
        draw_shape(ImageDraw.Draw(shape), SHAPES[k % len(SHAPES)], (x, y, x + side, y + side), 255)
        paint = (np.asarray(shape) > 0) & fill_mask(FILLS[k % len(SHAPES)], size)
        img[paint] = CONCEPT_COLORS[k // len(SHAPES)]
    return Image.fromarray(img)


def lesion_color(folder_index: int) -> tuple[int, int, int]:
    """12 hues x 2 brightness levels: a distinct, saturated colour for each of up to 24 folders."""
    r, g, b = colorsys.hsv_to_rgb((folder_index % 12) / 12, 0.9, 0.95 if folder_index % 24 < 12 else 0.5)
    return int(r * 255), int(g * 255), int(b * 255)


def lesion_image(rng: np.random.Generator, size: int, skin_type: int, folder_index: int) -> Image.Image:
    """The lesion of a Dermnet folder: its colour and pattern (folder index % 4), placed at random."""
    img = skin_background(rng, size, skin_type)
    draw = ImageDraw.Draw(img)
    color = lesion_color(folder_index)
    pattern = PATTERNS[folder_index % len(PATTERNS)]
    if pattern == "dots":
        for _ in range(int(rng.integers(20, 36))):
            x, y, rad = int(rng.integers(0, size)), int(rng.integers(0, size)), int(rng.integers(size // 30, size // 12))
            draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=color)
    elif pattern == "rings":
        cx, cy = int(rng.integers(size // 3, 2 * size // 3)), int(rng.integers(size // 3, 2 * size // 3))
        for rad in range(size // 10, size // 2 + size // 5, size // 9):
            draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=color, width=max(3, size // 22))
    elif pattern == "blob":
        cx, cy = int(rng.integers(size // 3, 2 * size // 3)), int(rng.integers(size // 3, 2 * size // 3))
        points = [(cx + np.cos(a) * rad, cy + np.sin(a) * rad) for a, rad in
                  zip(np.linspace(0, 2 * np.pi, 12, endpoint=False), rng.uniform(size / 4, size / 2.4, 12))]
        draw.polygon([(int(x), int(y)) for x, y in points], fill=color)
    else:  # stripes
        offset, step = int(rng.integers(0, size // 8)), size // 8
        for x in range(-size + offset, size, step):
            draw.line((x, 0, x + size, size), fill=color, width=max(3, size // 18))
    return img
