"""The synthetic world of the tiny model: how a label looks in a synthetic skin photo.

One definition, used both by `data_prep/make_synthetic.py` (which writes the synthetic datasets) and by the
tiny asset build (which pretrains the tiny vision encoder and Q-Former on freshly drawn images of the same
world, as BLIP-2's encoders were pretrained on real photos). docs/model.md ("The synthetic world") describes it.

The world is built from the 48 SKINCON concepts. Each concept is one coloured, textured glyph (8 colours x 6
shapes, each shape with its own fill texture: solid, stripes, ...; the texture makes the shape visible at the
scale of one ViT patch). A SKINCON-style image shows one glyph per concept in its own quadrant (at most 4).

A Dermnet-style lesion image shows glyphs of the concepts of its class, drawn from a class-dependent
distribution (`CLASS_LOOKS`): the 16 classes come in 8 confusable pairs (dermatitis / psoriasis, malignant
lesions / melanoma, ...). The two classes of a pair share one concept and each has a concept of its own *of the
same colour* (only the shape tells them apart), and the pairs reuse each other's colours: a classifier of pixel
colours can find the pair, hardly the class. Each concept of the class shows with a probability; the partner's
own concept sometimes shows instead or as well, and a random concept sometimes joins. The class therefore is a
combination of step-1 concepts, which is why learning the concepts (step 1) helps learning the classes (step 2).
The Dermnet folder sets the arrangement (its `pattern`: dots = many small glyphs, blob = few large ones, rings
and stripes = medium glyphs around a ring or over a few lines of the lesion's first colour).

Every image is a skin-tone background (the Fitzpatrick type's tone, varied per image, with pixel noise); glyphs
are blended into it with an opacity, so a dark glyph shows less on dark skin (the strata differ), then lit with a
random gradient and gain and, sometimes, blurred. Drawing is seeded by the caller's `numpy.random.Generator`: the
same generator state gives the same pixels. Label noise is the dataset writer's (make_synthetic.py).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SKIN_TONES = {1: (250, 222, 196), 2: (236, 192, 158), 3: (214, 168, 124), 4: (186, 128, 90), 5: (132, 84, 54),
              6: (84, 52, 34)}
SKIN_TONE_SPREAD = 9.0   # per-image std of the tone (per channel): neighbouring types overlap
CONCEPT_COLORS = [(200, 30, 30), (30, 150, 40), (30, 60, 200), (235, 205, 20), (140, 40, 170), (15, 15, 15),
                  (245, 245, 245), (240, 130, 20)]
SHAPES = ("disk", "square", "triangle", "ring", "cross", "diamond")
FILLS = ("solid", "horizontal stripes", "vertical stripes", "checks", "dots", "diagonal stripes")  # one per shape
PATTERNS = ("dots", "rings", "blob", "stripes")
# The doctors' note of a synthetic notes image (data_prep/make_synthetic.py writes it; the tiny LLM's corpus says
# it the same way).
NOTE_CAPTION = ("The image shows {phrase}. The affected skin shows a {pattern} pattern. A dermatologist should "
                "confirm the diagnosis and advise on treatment.")
N_FOLDERS = 23                                   # Dermnet folders (sorted names index the arrangements)
N_CONCEPTS = len(SHAPES) * len(CONCEPT_COLORS)   # 48 SKINCON concepts (header order indexes the glyphs)

# The class looks: (shared concept, the class's own concept) by SKINCON concept name; the two classes of a pair
# share the first and their own concepts have the same colour (concept index // 6). Checked in `class_looks`.
CONFUSABLE_PAIRS = (
    (("Dermatitis", "Erythema", "Xerosis"), ("Psoriasis and lichen planus", "Erythema", "Scale")),
    (("Malignant lesions", "Nodule", "Gray"), ("Melanoma skin cancer, nevi, moles", "Nodule", "Pigmented")),
    (("Acne and rosacea", "Pustule", "Papule"), ("Bacterial infections", "Pustule", "Abscess")),
    (("Bullous disease", "Vesicle", "Bulla"), ("Herpes", "Vesicle", "Erosion")),
    (("Fungal infections", "Patch", "Fissure"), ("Infestations and bites", "Patch", "Excoriation")),
    (("Urticaria hives", "Macule", "Wheal"), ("Light diseases", "Macule", "Pigmented")),
    (("Benign tumors", "Dome-shaped", "Warty/Papillomatous"), ("Vascular tumors", "Dome-shaped", "Pedunculated")),
    (("Connective tissue diseases", "Atrophy", "Sclerosis"), ("Others", "Atrophy", "Telangiectasia")),
)
P_SHARED = 0.85        # the pair's shared concept shows
P_OWN = 0.8            # the class's own concept shows (at least one of the two always does)
P_PARTNER = 0.12       # the partner class's own concept shows too (the confusion of the pair)
P_RANDOM = 0.25        # a random other concept joins


# ---------------------------------------------------------------------------------------------- looks
@lru_cache(maxsize=1)
def class_looks() -> dict[str, dict]:
    """Class name -> {"shared", "own", "partner_own": concept indices, "partner": class name}, checked."""
    from skingpt4.common.concept_table import CONCEPTS

    names = list(CONCEPTS)
    if len(names) != N_CONCEPTS:
        raise ValueError(f"the world draws {N_CONCEPTS} concept glyphs, the concept table has {len(names)}")
    looks = {}
    for a, b in CONFUSABLE_PAIRS:
        (name_a, shared_a, own_a), (name_b, shared_b, own_b) = a, b
        ia, ib = names.index(own_a), names.index(own_b)
        if shared_a != shared_b or ia // len(SHAPES) != ib // len(SHAPES) or ia == ib:
            raise ValueError(f"confusable pair {name_a} / {name_b}: must share a concept and own concepts of one colour")
        looks[name_a] = {"shared": names.index(shared_a), "own": ia, "partner_own": ib, "partner": name_b}
        looks[name_b] = {"shared": names.index(shared_b), "own": ib, "partner_own": ia, "partner": name_a}
    return looks


@lru_cache(maxsize=1)
def folder_looks() -> list[tuple[str, str]]:
    """(class, pattern) of each Dermnet folder, in sorted folder-name order (the class table places folders)."""
    from skingpt4.common.class_table import dermnet_mapping

    mapping = dermnet_mapping()
    folders = sorted(mapping["folders"])
    others = "Others" if "Others" in mapping["classes"] else None
    return [(mapping["folders"][f] or others, PATTERNS[i % len(PATTERNS)]) for i, f in enumerate(folders)]


def lesion_concepts(rng: np.random.Generator, label: str) -> list[int]:
    """The concepts one lesion of class `label` shows: a draw from the class's distribution (sorted indices)."""
    look = class_looks()[label]
    shown = {look["shared"]} if rng.random() < P_SHARED else set()
    if rng.random() < P_OWN or not shown:
        shown.add(look["own"])
    if rng.random() < P_PARTNER:
        shown.add(look["partner_own"])
    if rng.random() < P_RANDOM:
        shown.add(int(rng.integers(0, N_CONCEPTS)))
    return sorted(shown)


# ---------------------------------------------------------------------------------------------- drawing
def skin_tone(rng: np.random.Generator, skin_type: int) -> np.ndarray:
    return np.array(SKIN_TONES[skin_type], dtype=np.float32) + rng.normal(0, SKIN_TONE_SPREAD, 3).astype(np.float32)


def skin_background(rng: np.random.Generator, size: int, skin_type: int) -> np.ndarray:
    """[size, size, 3] float32: the (varied) skin tone with pixel noise."""
    noise = rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    return skin_tone(rng, skin_type)[None, None] + noise


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


def _paint_glyph(img: np.ndarray, concept: int, box: tuple[int, int, int, int], opacity: float) -> None:
    size = img.shape[0]
    shape = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(shape), SHAPES[concept % len(SHAPES)], box, 255)
    paint = (np.asarray(shape) > 0) & fill_mask(FILLS[concept % len(SHAPES)], size)
    color = np.array(CONCEPT_COLORS[concept // len(SHAPES)], dtype=np.float32)
    img[paint] = opacity * color + (1 - opacity) * img[paint]


def _finish(rng: np.random.Generator, img: np.ndarray) -> Image.Image:
    """Lighting (a random gradient and gain), then sometimes a blur; uint8 RGB."""
    size = img.shape[0]
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size] / max(1, size - 1) - 0.5
    light = rng.uniform(0.8, 1.15) * (1 + rng.uniform(-0.3, 0.3) * (np.cos(angle) * x + np.sin(angle) * y))
    out = Image.fromarray(np.clip(img * light[..., None], 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.3)) * size / 256))
    return out


def concept_image(rng: np.random.Generator, size: int, skin_type: int, concepts: list[int]) -> Image.Image:
    """One glyph per concept index (shape and fill = index % 6, colour = index // 6), one per quadrant, jittered."""
    if len(concepts) > 4:
        raise ValueError(f"at most 4 concepts fit one image (one per quadrant), got {len(concepts)}")
    img = skin_background(rng, size, skin_type)
    cells = rng.permutation(4)
    half = size // 2
    for k, cell in zip(concepts, cells):
        side = int(rng.integers(half * 6 // 10, half * 9 // 10))
        x = (cell % 2) * half + int(rng.integers(0, half - side + 1))
        y = (cell // 2) * half + int(rng.integers(0, half - side + 1))
        _paint_glyph(img, k, (x, y, x + side, y + side), float(rng.uniform(0.75, 1.0)))
    return _finish(rng, img)


# glyph side as a share of a 3x3 grid cell, and copies of each concept, per arrangement
_ARRANGEMENTS = {"dots": ((0.45, 0.65), 2), "rings": ((0.6, 0.85), 1), "blob": ((0.8, 1.0), 1),
                 "stripes": ((0.6, 0.85), 1)}


def lesion(rng: np.random.Generator, size: int, skin_type: int, label: str, pattern: str,
           concepts: list[int] | None = None) -> tuple[Image.Image, list[int]]:
    """A lesion of class `label` in the arrangement `pattern`: (image, the concepts it shows). `concepts`
    (default: a draw from the class's distribution) says which glyphs to draw."""
    shown = lesion_concepts(rng, label) if concepts is None else sorted(concepts)
    img = skin_background(rng, size, skin_type)
    opacity = float(rng.uniform(0.7, 1.0))
    first = np.array(CONCEPT_COLORS[shown[0] // len(SHAPES)], dtype=np.float32)
    if pattern in ("rings", "stripes"):  # the lesion's outline in its first colour, under the glyphs
        mark = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mark)
        width = max(2, size // 40)
        if pattern == "rings":
            (cx, cy), rad = (int(v) for v in rng.integers(size * 2 // 5, size * 3 // 5, 2)), int(size * 0.42)
            draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=255, width=width)
        else:
            offset = int(rng.integers(0, size // 4))
            for x in range(-size + offset, size, size // 4):
                draw.line((x, 0, x + size, size), fill=255, width=width)
        on = np.asarray(mark) > 0
        img[on] = 0.6 * opacity * first + (1 - 0.6 * opacity) * img[on]
    (low, high), copies = _ARRANGEMENTS[pattern]
    glyphs = [k for k in shown for _ in range(copies)]
    cell = size // 3
    for k, c in zip(glyphs, rng.permutation(9)):
        side = int(cell * rng.uniform(low, high))
        x = (c % 3) * cell + int(rng.integers(0, cell - side + 1))
        y = (c // 3) * cell + int(rng.integers(0, cell - side + 1))
        _paint_glyph(img, k, (x, y, x + side, y + side), opacity)
    return _finish(rng, img), shown


def lesion_image(rng: np.random.Generator, size: int, skin_type: int, folder_index: int) -> Image.Image:
    """A lesion drawn for a Dermnet folder (sorted-name index): its class's concepts in its arrangement."""
    label, pattern = folder_looks()[folder_index]
    return lesion(rng, size, skin_type, label, pattern)[0]
