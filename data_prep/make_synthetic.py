"""Synthetic samples in exactly the public formats, then prepared into training-ready sets — one command:

    python data_prep/make_synthetic.py --out data/synthetic

writes (layout documented in data_prep/README.md):
    raw/skincon/annotations_fitzpatrick17k.csv, raw/skincon/annotations_ddi.csv   (exact SKINCON header)
    raw/fitzpatrick17k/fitzpatrick17k.csv + raw/fitzpatrick17k/images/<md5>.jpg
    raw/ddi/ddi_metadata.csv + raw/ddi/images/000NNN.png
    raw/dermnet/{train,test}/<the 23 Dermnet folders>/*.jpg
    raw/notes/filter_cap.json + raw/notes/image/*.jpg
    prepared/skincon, prepared/dermnet, prepared/dermnet_test, prepared/notes   (filter_cap.json + image/)
    shards/skincon/shard-*.tar                                                   (webdataset)
    stats/<set>/stats.csv + stats.png

Images are not photographs: their visual features are a function of their labels, so a model can learn the
mapping. SKINCON: each of the 48 concepts is one coloured shape (8 colours x 6 shapes) drawn on a skin-tone
background set by the Fitzpatrick type. Dermnet/notes: each folder has its own lesion colour (12 hues x 2
brightness levels) and pattern (dots, rings, blob, stripes). Seeded: the same arguments give byte-identical files. The SKINCON part
deliberately contains rows that preparation must skip (2 "Do not consider", 1 without concepts, 1 missing
image, 1 truncated image), so the skip accounting is exercised on every run.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python data_prep/make_synthetic.py`
    import sys
    from pathlib import Path as _Path
    sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import colorsys
import csv
import hashlib
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_prep.check_notes import check_notes
from data_prep.common import DEFAULT_MAX_SIDE, PrepareError, prepare_output, write_prepared
from data_prep.prepare_dermnet import load_mapping, prepare_dermnet
from data_prep.prepare_skincon import prepare_skincon
from data_prep.skincon_concepts import CONCEPTS, EXCLUDE_COLUMN
from data_prep.stats import dataset_stats
from data_prep.write_shards import write_shards
from skingpt4.common.images import DEFAULT_MAX_PIXELS

SKIN_TONES = {1: (250, 222, 196), 2: (236, 192, 158), 3: (214, 168, 124), 4: (186, 128, 90), 5: (132, 84, 54), 6: (84, 52, 34)}
CONCEPT_COLORS = [(200, 30, 30), (30, 150, 40), (30, 60, 200), (235, 205, 20), (140, 40, 170), (15, 15, 15),
                  (245, 245, 245), (240, 130, 20)]
SHAPES = ("disk", "square", "triangle", "ring", "cross", "diamond")
PATTERNS = ("dots", "rings", "blob", "stripes")
FITZPATRICK_HEADER = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label",
                      "three_partition_label", "qc", "url", "url_alphanum"]
DDI_HEADER = ["", "DDI_ID", "DDI_file", "skin_tone", "malignant", "disease"]
SKINCON_HEADER = ["", "ImageID", *CONCEPTS, EXCLUDE_COLUMN]
DIAGNOSES = ["psoriasis", "eczema", "basal cell carcinoma", "melanoma", "seborrheic keratosis", "acne vulgaris"]


# ---------------------------------------------------------------- drawing
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


def concept_image(rng: np.random.Generator, size: int, skin_type: int, concepts: list[str]) -> Image.Image:
    """One glyph per concept (shape = index % 6, colour = index // 6), one per quadrant, jittered."""
    img = skin_background(rng, size, skin_type)
    draw = ImageDraw.Draw(img)
    cells = rng.permutation(4)
    half = size // 2
    for concept, cell in zip(concepts, cells):
        k = list(CONCEPTS).index(concept)
        side = int(rng.integers(half * 5 // 10, half * 8 // 10))
        x = (cell % 2) * half + int(rng.integers(0, half - side + 1))
        y = (cell // 2) * half + int(rng.integers(0, half - side + 1))
        draw_shape(draw, SHAPES[k % 6], (x, y, x + side, y + side), CONCEPT_COLORS[k // 6])
    return img


def pattern_image(rng: np.random.Generator, size: int, skin_type: int, folder_index: int) -> Image.Image:
    """Lesion colour from the folder's hue, pattern = folder index % 4, with random placement and counts."""
    img = skin_background(rng, size, skin_type)
    draw = ImageDraw.Draw(img)
    # 12 hues x 2 brightness levels: a distinct, saturated colour for each of up to 24 folders
    r, g, b = colorsys.hsv_to_rgb((folder_index % 12) / 12, 0.9, 0.95 if folder_index % 24 < 12 else 0.5)
    color = (int(r * 255), int(g * 255), int(b * 255))
    pattern = PATTERNS[folder_index % len(PATTERNS)]
    if pattern == "dots":
        for _ in range(int(rng.integers(12, 25))):
            x, y, rad = int(rng.integers(0, size)), int(rng.integers(0, size)), int(rng.integers(size // 40, size // 16))
            draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=color)
    elif pattern == "rings":
        cx, cy = int(rng.integers(size // 3, 2 * size // 3)), int(rng.integers(size // 3, 2 * size // 3))
        for rad in range(size // 10, size // 2, size // 10):
            draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=color, width=max(2, size // 40))
    elif pattern == "blob":
        cx, cy = int(rng.integers(size // 3, 2 * size // 3)), int(rng.integers(size // 3, 2 * size // 3))
        points = [(cx + np.cos(a) * rad, cy + np.sin(a) * rad) for a, rad in
                  zip(np.linspace(0, 2 * np.pi, 12, endpoint=False), rng.uniform(size / 6, size / 3, 12))]
        draw.polygon([(int(x), int(y)) for x, y in points], fill=color)
    else:  # stripes
        offset, step = int(rng.integers(0, size // 8)), size // 8
        for x in range(-size + offset, size, step):
            draw.line((x, 0, x + size, size), fill=color, width=max(2, size // 30))
    return img


# ---------------------------------------------------------------- raw formats
def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_skincon(raw: Path, n_fitzpatrick: int, n_ddi: int, size: int, seed: int) -> None:
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    concept_names = list(CONCEPTS)
    fitz_images, ddi_images = raw / "fitzpatrick17k" / "images", raw / "ddi" / "images"
    fitz_images.mkdir(parents=True)
    ddi_images.mkdir(parents=True)
    annotations = {"fitzpatrick17k": [], "ddi": []}
    fitz_meta, ddi_meta = [], []
    for i in range(n_fitzpatrick + n_ddi):
        source = "fitzpatrick17k" if i < n_fitzpatrick else "ddi"
        concepts = sorted({concept_names[i % len(concept_names)], *pick.sample(concept_names, pick.randint(0, 2))},
                          key=concept_names.index)
        skin_type = pick.randint(1, 6)
        exclude = 1 if i in (3, n_fitzpatrick + 1) else 0          # flagged "Do not consider this image"
        if i == 5:
            concepts = []                                           # a row without any concept
        if source == "fitzpatrick17k":
            name = hashlib.md5(f"synthetic-skin-{seed}-{i}".encode()).hexdigest()
            file = f"{name}.jpg"
            scale = -1 if i == 7 else skin_type                     # -1: unknown skin type, as in the real file
            fitz_meta.append([name, scale, scale, DIAGNOSES[i % 6], "inflammatory", "non-neoplastic", "", "", ""])
        else:
            ddi_id = i - n_fitzpatrick + 1
            file = f"{ddi_id:06d}.png"
            tone = ("12", "34", "56")[(skin_type - 1) // 2]
            ddi_meta.append([len(ddi_meta), ddi_id, file, tone, "TRUE" if i % 3 == 0 else "FALSE", DIAGNOSES[i % 6]])
        image = concept_image(rng, size, skin_type, concepts)
        folder = fitz_images if source == "fitzpatrick17k" else ddi_images
        if i == 9:
            pass                                                    # image never written: "missing"
        elif i == 11:
            (folder / file).write_bytes(_jpeg(image)[:600])         # cut short: "truncated"
        else:
            image.save(folder / file, **({"quality": 92} if file.endswith(".jpg") else {}))
        flags = [1 if c in concepts else 0 for c in concept_names]
        annotations[source].append([len(annotations[source]), file, *flags, exclude])
    write_csv(raw / "skincon" / "annotations_fitzpatrick17k.csv", SKINCON_HEADER, annotations["fitzpatrick17k"])
    write_csv(raw / "skincon" / "annotations_ddi.csv", SKINCON_HEADER, annotations["ddi"])
    write_csv(raw / "fitzpatrick17k" / "fitzpatrick17k.csv", FITZPATRICK_HEADER, fitz_meta)
    write_csv(raw / "ddi" / "ddi_metadata.csv", DDI_HEADER, ddi_meta)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def make_dermnet(raw: Path, per_folder: dict[str, int], size: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    folders = sorted(load_mapping()["folders"])
    for split, count in per_folder.items():
        for index, folder in enumerate(folders):
            out = raw / "dermnet" / split / folder
            out.mkdir(parents=True)
            for j in range(count):
                image = pattern_image(rng, size, int(rng.integers(1, 7)), index)
                image.save(out / f"synthetic-{split}-{index:02d}-{j:04d}.jpg", quality=92)


def make_notes(raw: Path, per_class: int, size: int, seed: int) -> None:
    """A doctors' notes folder: for each class, images drawn like its first Dermnet folder, with a note."""
    rng = np.random.default_rng(seed + 2)
    mapping = load_mapping()
    folders = sorted(mapping["folders"])
    image_dir = raw / "notes" / "image"
    image_dir.mkdir(parents=True)
    annotations = []
    for label, phrase in mapping["classes"].items():
        folder = next(f for f in folders if mapping["folders"][f] == label)
        for j in range(per_class):
            image_id = f"note_{folders.index(folder):02d}_{j:03d}"
            pattern_image(rng, size, int(rng.integers(1, 7)), folders.index(folder)).save(
                image_dir / f"{image_id}.jpg", quality=92)
            annotations.append({"image_id": image_id, "caption": (
                f"The image shows {phrase}. The affected skin shows a {PATTERNS[folders.index(folder) % 4]} "
                f"pattern. A dermatologist should confirm the diagnosis and advise on treatment.")})
    (raw / "notes" / "filter_cap.json").write_text(json.dumps({"annotations": annotations}, indent=1) + "\n")


# ---------------------------------------------------------------- everything
def make_synthetic(out: Path, per_class: int = 4, test_per_class: int = 1, skincon_images: int = 48,
                   ddi_images: int = 16, notes_per_class: int = 2, size: int = 256, seed: int = 0,
                   prepare: bool = True, stats: bool = True, overwrite: bool = False, log=print) -> None:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PrepareError(f"'{out}' is not empty; pass --overwrite to regenerate it")
        for sub in ("raw", "prepared", "shards", "stats"):
            shutil.rmtree(out / sub, ignore_errors=True)
    raw = out / "raw"
    make_skincon(raw, skincon_images, ddi_images, size, seed)
    make_dermnet(raw, {"train": per_class, "test": test_per_class}, size, seed)
    make_notes(raw, notes_per_class, size, seed)
    log(f"wrote synthetic raw data to {raw}")
    if not prepare:
        return
    prepared = out / "prepared"
    quiet = lambda message: None  # noqa: E731  (per-step reports are summarised below)
    reports = {
        "skincon": prepare_skincon(prepared / "skincon", raw / "skincon" / "annotations_fitzpatrick17k.csv",
                                   raw / "fitzpatrick17k" / "images", raw / "fitzpatrick17k" / "fitzpatrick17k.csv",
                                   raw / "skincon" / "annotations_ddi.csv", raw / "ddi" / "images",
                                   raw / "ddi" / "ddi_metadata.csv", log=quiet),
        "dermnet": prepare_dermnet(raw / "dermnet", "train", prepared / "dermnet", log=quiet),
        "dermnet_test": prepare_dermnet(raw / "dermnet", "test", prepared / "dermnet_test", log=quiet),
    }
    records, sources, skips = check_notes(raw / "notes", decode=False)
    prepare_output(prepared / "notes", overwrite=False)
    reports["notes"] = write_prepared(prepared / "notes", records, sources, skips,
                                      {"kind": "notes", "max_side": DEFAULT_MAX_SIDE}, DEFAULT_MAX_SIDE,
                                      DEFAULT_MAX_PIXELS, 1, quiet)
    for name, report in reports.items():
        skipped = ", ".join(f"{reason} {info['count']}" for reason, info in report["skipped"].items()) or "none"
        log(f"prepared {prepared / name}: {report['written']} pairs (skipped: {skipped})")
    index = write_shards(prepared / "skincon", out / "shards" / "skincon", maxcount=16)
    log(f"wrote {index['count']} samples in {len(index['shards'])} webdataset shards to {out / 'shards' / 'skincon'}")
    if stats:
        for name in ("skincon", "dermnet"):
            dataset_stats(prepared / name, out / "stats" / name)
        log(f"wrote statistics (CSV + PNG) to {out / 'stats'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output folder (default data/synthetic)")
    parser.add_argument("--per-class", type=int, default=4, help="Dermnet train images per folder (23 folders)")
    parser.add_argument("--test-per-class", type=int, default=1, help="Dermnet test images per folder")
    parser.add_argument("--skincon-images", type=int, default=48, help="Fitzpatrick17k rows in the SKINCON CSV")
    parser.add_argument("--ddi-images", type=int, default=16, help="DDI rows in the SKINCON CSV")
    parser.add_argument("--notes-per-class", type=int, default=2, help="notes per class (16 classes)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-only", action="store_true", help="only the raw public formats, no preparation")
    parser.add_argument("--no-stats", action="store_true", help="skip the statistics CSV/PNG")
    parser.add_argument("--overwrite", action="store_true", help="regenerate an existing --out")
    args = parser.parse_args(argv)
    if args.skincon_images < 12 or args.ddi_images < 2:
        parser.error("--skincon-images must be >= 12 and --ddi-images >= 2 (the deliberate skip cases need them)")
    try:
        make_synthetic(args.out, args.per_class, args.test_per_class, args.skincon_images, args.ddi_images,
                       args.notes_per_class, args.image_size, args.seed, not args.raw_only, not args.no_stats,
                       args.overwrite)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
