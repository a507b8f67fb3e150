"""Synthetic samples in exactly the public formats, then prepared into training-ready sets — one command:

    python -m data_prep.make_synthetic --out data/synthetic

writes (layout documented in data_prep/README.md):
    raw/skincon/annotations_fitzpatrick17k.csv, raw/skincon/annotations_ddi.csv   (exact SKINCON header)
    raw/fitzpatrick17k/fitzpatrick17k.csv + raw/fitzpatrick17k/images/<md5>.jpg
    raw/ddi/ddi_metadata.csv + raw/ddi/images/000NNN.png
    raw/dermnet/{train,test}/<the 23 Dermnet folders>/*.jpg                      (balanced by class)
    raw/notes/filter_cap.json + raw/notes/image/*.jpg
    prepared/skincon, prepared/dermnet, prepared/dermnet_test, prepared/notes   (filter_cap.json + image/)
    cases/dermnet_test.csv        the Dermnet test split as a case list, with the skin type of each image
    cases/skincon_test.csv + cases/skincon_test/   held-out SKINCON-style cases with their concepts
    cases/dermnet_val.csv + cases/dermnet_val/     a validation split (calibration of the differential)
    shards/skincon/shard-*.tar                                                   (webdataset)
    stats/<set>/stats.csv + stats.png
    synthetic.json                the arguments and generator version (`--reuse` keeps a matching folder)

Images are not photographs: their visual features are a function of their labels, so a model can learn the
mapping, but not from colour alone (skingpt4/tiny/world.py draws them; docs/model.md, "The synthetic world").
SKINCON: each of the 48 concepts is one coloured, textured shape (8 colours x 6 shapes) drawn on a skin-tone
background set (and varied) by the Fitzpatrick type. Dermnet/notes: a lesion shows glyphs of its class's concepts,
drawn from a class-dependent distribution in which the classes of a confusable pair share colours; the folder sets
the arrangement (dots, rings, blob, stripes). A share `LABEL_NOISE` of the Dermnet and notes images is drawn like
the confusable partner of its class but filed under its own (label noise, as in scraped photo sets).
Seeded: the same arguments give byte-identical files. The SKINCON part deliberately contains rows that
preparation must skip (2 "Do not consider", 1 without concepts, 1 missing image, 1 truncated image), so the
skip accounting is exercised on every run.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: its imports need the package form
    raise SystemExit("run it from the repository root as: python -m data_prep.make_synthetic ...")

import argparse
import csv
import hashlib
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep.check_notes import check_notes
from data_prep.common import DEFAULT_MAX_SIDE, PrepareError, prepare_output, write_prepared
from data_prep.prepare_dermnet import load_mapping, prepare_dermnet
from data_prep.prepare_skincon import ROMAN, prepare_skincon
from skingpt4.common.concept_table import CONCEPTS, EXCLUDE_COLUMN
from data_prep.stats import dataset_stats
from data_prep.write_shards import write_shards
from skingpt4.common.images import DEFAULT_MAX_PIXELS
from skingpt4.tiny.world import NOTE_CAPTION, PATTERNS, class_looks, concept_image, folder_looks, lesion

FITZPATRICK_HEADER = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label",
                      "three_partition_label", "qc", "url", "url_alphanum"]
DDI_HEADER = ["", "DDI_ID", "DDI_file", "skin_tone", "malignant", "disease"]
SKINCON_HEADER = ["", "ImageID", *CONCEPTS, EXCLUDE_COLUMN]
LABEL_NOISE = 0.05   # share of Dermnet / notes images drawn like the partner class (mislabelled)
DIAGNOSES = ["psoriasis", "eczema", "basal cell carcinoma", "melanoma", "seborrheic keratosis", "acne vulgaris"]


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
        image = concept_image(rng, size, skin_type, [concept_names.index(c) for c in concepts])
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


def make_skincon_test(out: Path, n: int, size: int, seed: int) -> None:
    """Held-out SKINCON-style cases (SKINCON itself has no split): images drawn like the step-1 rows, listed in
    a cases CSV with their concepts and skin type (`case_id,image,skin_type,concepts`)."""
    rng, pick = np.random.default_rng(seed + 3), random.Random(seed + 3)
    concept_names = list(CONCEPTS)
    (out / "skincon_test").mkdir(parents=True)
    rows = []
    for i in range(n):
        concepts = sorted({concept_names[(7 * i) % len(concept_names)], *pick.sample(concept_names, pick.randint(0, 2))},
                          key=concept_names.index)
        skin_type = pick.randint(1, 6)
        file = f"skincon_test/synthetic-skincon-{i:04d}.jpg"
        concept_image(rng, size, skin_type, [concept_names.index(c) for c in concepts]).save(out / file, quality=92)
        rows.append([f"skincon_test_{i:04d}", file, ROMAN[skin_type], ";".join(concepts)])
    write_csv(out / "skincon_test.csv", ["case_id", "image", "skin_type", "concepts"], rows)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def class_folders(mapping: dict) -> dict[str, list[int]]:
    """Class -> the indices (in sorted-name order, which sets their look) of the Dermnet folders feeding it."""
    folders = sorted(mapping["folders"])
    out: dict[str, list[int]] = {label: [] for label in mapping["classes"]}
    for index, folder in enumerate(folders):
        if mapping["folders"][folder] is not None:
            out[mapping["folders"][folder]].append(index)
    return out


def noisy_lesion(rng: np.random.Generator, size: int, skin_type: int, folder_index: int) -> Image.Image:
    """A lesion for a Dermnet folder; with probability LABEL_NOISE drawn like its class's confusable partner."""
    label, pattern = folder_looks()[folder_index]
    if rng.random() < LABEL_NOISE:
        label = class_looks()[label]["partner"]
    return lesion(rng, size, skin_type, label, pattern)[0]


def make_dermnet(raw: Path, per_class: dict[str, int], size: int, seed: int) -> dict[str, list[list]]:
    """Dermnet's train/test layout, balanced by class: each class gets `per_class[split]` images, dealt
    round-robin over the folders that feed it (every folder exists, possibly empty). Returns, per split, the
    case rows [case_id, image path under raw/, label, skin type] (the drawn skin type is known here)."""
    rng = np.random.default_rng(seed + 1)
    mapping = load_mapping()
    folders = sorted(mapping["folders"])
    sources = class_folders(mapping)
    cases: dict[str, list[list]] = {}
    for split, count in per_class.items():
        for folder in folders:
            (raw / "dermnet" / split / folder).mkdir(parents=True)
        cases[split] = []
        for label, indices in sources.items():
            for j in range(count):
                index = indices[j % len(indices)]
                skin_type = int(rng.integers(1, 7))
                rel = Path("dermnet") / split / folders[index] / f"synthetic-{split}-{index:02d}-{j:04d}.jpg"
                noisy_lesion(rng, size, skin_type, index).save(raw / rel, quality=92)
                cases[split].append([f"{folders[index]}/{rel.stem}", rel.as_posix(), label, ROMAN[skin_type]])
    return cases


def make_validation_cases(out: Path, per_class: int, size: int, seed: int) -> None:
    """A validation split for calibration (never the test cases): Dermnet-style lesions drawn like the train and
    test splits (label noise included), listed in cases/dermnet_val.csv with their class and skin type."""
    rng = np.random.default_rng(seed + 4)
    mapping = load_mapping()
    folders = sorted(mapping["folders"])
    (out / "dermnet_val").mkdir(parents=True)
    rows = []
    for label, indices in class_folders(mapping).items():
        for j in range(per_class):
            index = indices[j % len(indices)]
            skin_type = int(rng.integers(1, 7))
            file = f"dermnet_val/synthetic-val-{index:02d}-{j:04d}.jpg"
            noisy_lesion(rng, size, skin_type, index).save(out / file, quality=92)
            rows.append([f"{folders[index]}/val-{j:04d}", file, label, ROMAN[skin_type]])
    write_csv(out / "dermnet_val.csv", ["case_id", "image", "label", "skin_type"], rows)


def make_notes(raw: Path, per_class: int, size: int, seed: int) -> None:
    """A doctors' notes folder: for each class, images drawn like its first Dermnet folder, with a note."""
    rng = np.random.default_rng(seed + 2)
    mapping = load_mapping()
    folders = sorted(mapping["folders"])
    image_dir = raw / "notes" / "image"
    image_dir.mkdir(parents=True)
    annotations = []
    for label, phrase in mapping["classes"].items():
        folder = folders[class_folders(mapping)[label][0]]
        for j in range(per_class):
            image_id = f"note_{folders.index(folder):02d}_{j:03d}"
            noisy_lesion(rng, size, int(rng.integers(1, 7)), folders.index(folder)).save(
                image_dir / f"{image_id}.jpg", quality=92)
            annotations.append({"image_id": image_id, "caption": NOTE_CAPTION.format(
                phrase=phrase, pattern=PATTERNS[folders.index(folder) % len(PATTERNS)])})
    (raw / "notes" / "filter_cap.json").write_text(json.dumps({"annotations": annotations}, indent=1) + "\n")


# ---------------------------------------------------------------- everything
MANIFEST = "synthetic.json"


def manifest(arguments: dict) -> dict:
    """What a generated folder was made from: the arguments and the generator's source (world included)."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(lesion.__code__.co_filename)):
        digest.update(source.read_bytes())
    return {"arguments": arguments, "generator_sha256": digest.hexdigest()}


def make_synthetic(out: Path, per_class: int = 24, test_per_class: int = 6, skincon_images: int = 384,
                   ddi_images: int = 96, notes_per_class: int = 4, skincon_test_images: int = 96, val_per_class: int = 6,
                   size: int = 256,
                   seed: int = 0, prepare: bool = True, stats: bool = True, overwrite: bool = False, log=print) -> None:
    out = Path(out)
    arguments = {k: v for k, v in locals().items() if k not in ("out", "overwrite", "log")}
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PrepareError(f"'{out}' is not empty; pass --overwrite to regenerate it")
        (out / MANIFEST).unlink(missing_ok=True)
        for sub in ("raw", "prepared", "shards", "stats", "cases"):
            shutil.rmtree(out / sub, ignore_errors=True)
    raw = out / "raw"
    make_skincon(raw, skincon_images, ddi_images, size, seed)
    dermnet_cases = make_dermnet(raw, {"train": per_class, "test": test_per_class}, size, seed)
    make_notes(raw, notes_per_class, size, seed)
    # Held-out case lists for evaluation: the Dermnet test split with the skin type each image was drawn with
    # (Fitzpatrick strata), and SKINCON-style cases with their concepts.
    write_csv(out / "cases" / "dermnet_test.csv", ["case_id", "image", "label", "skin_type"],
              [[cid, f"../raw/{image}", label, skin] for cid, image, label, skin in dermnet_cases["test"]])
    make_skincon_test(out / "cases", skincon_test_images, size, seed)
    if val_per_class:
        make_validation_cases(out / "cases", val_per_class, size, seed)
    log(f"wrote synthetic raw data to {raw} and held-out case lists to {out / 'cases'}")
    if prepare:
        _prepare_all(out, stats, log)
    (out / MANIFEST).write_text(json.dumps(manifest(arguments), indent=1) + "\n")  # last: marks a whole folder


def is_current(out: Path, arguments: dict) -> bool:
    """Whether `out` holds a complete generation from these arguments by this generator."""
    try:
        return json.loads((Path(out) / MANIFEST).read_text()) == manifest(arguments)
    except (OSError, ValueError):
        return False


def _prepare_all(out: Path, stats: bool, log) -> None:
    raw, prepared = out / "raw", out / "prepared"
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
    parser.add_argument("--per-class", type=int, default=24,
                        help="Dermnet train images per class (16 classes, dealt over their 23 folders)")
    parser.add_argument("--test-per-class", type=int, default=6, help="Dermnet test images per class")
    parser.add_argument("--skincon-images", type=int, default=384, help="Fitzpatrick17k rows in the SKINCON CSV")
    parser.add_argument("--ddi-images", type=int, default=96, help="DDI rows in the SKINCON CSV")
    parser.add_argument("--notes-per-class", type=int, default=4, help="notes per class (16 classes)")
    parser.add_argument("--skincon-test-images", type=int, default=96, help="held-out SKINCON-style cases")
    parser.add_argument("--val-per-class", type=int, default=6,
                        help="validation cases per class (cases/dermnet_val.csv, for calibration; 0: none)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-only", action="store_true", help="only the raw public formats, no preparation")
    parser.add_argument("--no-stats", action="store_true", help="skip the statistics CSV/PNG")
    parser.add_argument("--overwrite", action="store_true", help="regenerate an existing --out")
    parser.add_argument("--reuse", action="store_true",
                        help="keep --out when it already holds this generation (same arguments and generator); "
                             "else regenerate it")
    args = parser.parse_args(argv)
    if args.skincon_images < 12 or args.ddi_images < 2:
        parser.error("--skincon-images must be >= 12 and --ddi-images >= 2 (the deliberate skip cases need them)")
    if min(args.per_class, args.test_per_class, args.notes_per_class, args.skincon_test_images) < 1:
        parser.error("--per-class, --test-per-class, --notes-per-class and --skincon-test-images must be >= 1")
    if args.val_per_class < 0:
        parser.error("--val-per-class must be >= 0")
    arguments = dict(per_class=args.per_class, test_per_class=args.test_per_class, skincon_images=args.skincon_images,
                     ddi_images=args.ddi_images, notes_per_class=args.notes_per_class,
                     skincon_test_images=args.skincon_test_images, val_per_class=args.val_per_class,
                     size=args.image_size, seed=args.seed,
                     prepare=not args.raw_only, stats=not args.no_stats)
    if args.reuse and is_current(args.out, arguments):
        print(f"{args.out} already holds this synthetic data (see {args.out / MANIFEST}); nothing to do")
        return 0
    try:
        make_synthetic(args.out, **arguments, overwrite=args.overwrite or args.reuse)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
