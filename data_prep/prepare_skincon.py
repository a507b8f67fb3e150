"""SKINCON -> step-1 training set (image + concept caption), docs/datasets.md.

    python -m data_prep.prepare_skincon --out data/prepared/skincon \
        --fitzpatrick-annotations skincon/annotations_fitzpatrick17k.csv \
        --fitzpatrick-images fitzpatrick17k/images --fitzpatrick-metadata fitzpatrick17k/fitzpatrick17k.csv \
        --ddi-annotations skincon/annotations_ddi.csv --ddi-images ddi/images --ddi-metadata ddi/ddi_metadata.csv

Either source alone works. Columns are read by name (current and older releases). Rows flagged
"Do not consider this image", rows without any concept and rows whose image is missing or unreadable are
skipped and counted by reason in prepare_report.json. Each record: image_id, caption, concepts (column
names), source, original_file, and skin_type / diagnosis when the metadata file is given.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: its imports need the package form
    raise SystemExit("run it from the repository root as: python -m data_prep.prepare_skincon ...")

import argparse
from pathlib import Path
from typing import Any, Optional

from data_prep.common import (DEFAULT_MAX_SIDE, PrepareError, Skips, add_image_args, index_files, parse_flag,
                            prepare_output, print_report, read_csv, stable_choice, write_prepared)
from skingpt4.common.concept_table import (CONCEPTS, DEFAULT_TEMPLATE, EXCLUDE_COLUMN, VARIED_TEMPLATES,
                                           concept_caption)
from skingpt4.common.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
DDI_TONES = {"12": "I-II", "34": "III-IV", "56": "V-VI"}


def fitzpatrick_skin_types(path: Path) -> dict[str, dict[str, Any]]:
    """fitzpatrick17k.csv -> {md5hash: {"skin_type": "I".."VI" or None, "diagnosis": label}}.
    Current files have `fitzpatrick_scale`, older ones `fitzpatrick`; -1 means unknown."""
    header, rows = read_csv(path, ["md5hash"], "Fitzpatrick17k metadata")
    column = next((c for c in ("fitzpatrick_scale", "fitzpatrick") if c in header), None)
    if column is None:
        raise PrepareError(f"Fitzpatrick17k metadata '{path}': missing column 'fitzpatrick_scale' (or the older "
                           f"'fitzpatrick'); columns present: {', '.join(repr(h) for h in header)}")
    out = {}
    for line, row in rows:
        try:
            value = int(float(row[column]))
        except ValueError:
            raise PrepareError(f"'{path}' line {line}, column '{column}': expected -1 or 1..6, got {row[column]!r}") from None
        if value not in ROMAN and value != -1:
            raise PrepareError(f"'{path}' line {line}, column '{column}': expected -1 or 1..6, got {row[column]!r}")
        out[row["md5hash"].strip()] = {"skin_type": ROMAN.get(value), "diagnosis": row.get("label", "").strip() or None}
    return out


def ddi_skin_types(path: Path) -> dict[str, dict[str, Any]]:
    """ddi_metadata.csv -> {DDI_file: {"skin_type": "I-II"|"III-IV"|"V-VI", "diagnosis": disease}}."""
    _, rows = read_csv(path, ["DDI_file", "skin_tone"], "DDI metadata")
    out = {}
    for line, row in rows:
        tone = row["skin_tone"].strip()
        if tone not in DDI_TONES:
            raise PrepareError(f"'{path}' line {line}, column 'skin_tone': expected 12, 34 or 56, got {row['skin_tone']!r}")
        out[row["DDI_file"].strip()] = {"skin_type": DDI_TONES[tone], "diagnosis": row.get("disease", "").strip() or None}
    return out


def read_annotations(path: Path, source: str, images: dict[str, Path], metadata: Optional[dict[str, dict]],
                     phrasings: str, seed: int, skips: Skips) -> tuple[list[dict], dict[str, str]]:
    header, rows = read_csv(path, ["ImageID", *CONCEPTS], f"SKINCON {source} annotations")
    has_exclude = EXCLUDE_COLUMN in header  # absent in the older release
    records, sources = [], {}
    for line, row in rows:
        file = row["ImageID"].strip()
        if not file:
            raise PrepareError(f"'{path}' line {line}, column 'ImageID': empty")
        image_id = f"{source}_{Path(file).stem}"
        if has_exclude and parse_flag(row[EXCLUDE_COLUMN], path, line, EXCLUDE_COLUMN):
            skips.add("do_not_consider", file)
            continue
        concepts = [c for c in CONCEPTS if parse_flag(row[c], path, line, c)]
        if not concepts:
            skips.add("no_concepts", file)
            continue
        if image_id in sources:
            skips.add("duplicate_row", file, f"line {line}")
            continue
        if file not in images:
            skips.add("image_missing", file, "not found under the images folder")
            continue
        template = stable_choice(VARIED_TEMPLATES, image_id, seed) if phrasings == "varied" else DEFAULT_TEMPLATE
        record: dict[str, Any] = {"image_id": image_id, "caption": concept_caption(concepts, template),
                                  "concepts": concepts, "source": source, "original_file": file}
        if metadata is not None:
            meta = metadata.get(Path(file).stem if source == "fitzpatrick17k" else file)
            record["skin_type"] = meta["skin_type"] if meta else None
            record["diagnosis"] = meta["diagnosis"] if meta else None
        records.append(record)
        sources[image_id] = str(images[file])
    return records, sources


def prepare_skincon(out: Path, fitzpatrick_annotations: Optional[Path] = None, fitzpatrick_images: Optional[Path] = None,
                    fitzpatrick_metadata: Optional[Path] = None, ddi_annotations: Optional[Path] = None,
                    ddi_images: Optional[Path] = None, ddi_metadata: Optional[Path] = None,
                    phrasings: str = "fixed", seed: int = 0, max_side: int = DEFAULT_MAX_SIDE,
                    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                    workers: int = 1, overwrite: bool = False, log=print,
                    max_bytes: Optional[int] = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    plan = [("fitzpatrick17k", fitzpatrick_annotations, fitzpatrick_images, fitzpatrick_metadata, fitzpatrick_skin_types),
            ("ddi", ddi_annotations, ddi_images, ddi_metadata, ddi_skin_types)]
    if not any(p[1] for p in plan):
        raise PrepareError("give --fitzpatrick-annotations and/or --ddi-annotations")
    skips, records, sources = Skips(), [], {}
    for source, csv_path, image_dir, meta_path, read_meta in plan:
        if csv_path is None:
            continue
        if image_dir is None or not Path(image_dir).is_dir():
            raise PrepareError(f"--{source.replace('17k', '')}-images: no such directory '{image_dir}' "
                               f"(the folder holding the {source} images)")
        metadata = read_meta(Path(meta_path)) if meta_path else None
        images = index_files(Path(image_dir), IMAGE_SUFFIXES)
        got, got_sources = read_annotations(Path(csv_path), source, images, metadata, phrasings, seed, skips)
        records += got
        sources.update(got_sources)
    prepare_output(out, overwrite)
    describe = {"kind": "skincon", "phrasings": phrasings, "seed": seed, "max_side": max_side}
    return write_prepared(out, records, sources, skips, describe, max_side, max_pixels, workers, log, max_bytes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="prepared folder to write (filter_cap.json + image/)")
    for source, images in (("fitzpatrick", "<md5>.jpg"), ("ddi", "000NNN.png")):
        parser.add_argument(f"--{source}-annotations", type=Path, help=f"SKINCON annotations_{source.replace('patrick', 'patrick17k')}.csv")
        parser.add_argument(f"--{source}-images", type=Path, help=f"folder with the {images} images (searched recursively)")
        parser.add_argument(f"--{source}-metadata", type=Path,
                            help="fitzpatrick17k.csv" if source == "fitzpatrick" else "ddi_metadata.csv")
    parser.add_argument("--phrasings", choices=("fixed", "varied"), default="fixed",
                        help="one caption sentence for all images, or one of several per image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the varied phrasings")
    add_image_args(parser)
    args = parser.parse_args(argv)
    try:
        report = prepare_skincon(args.out, args.fitzpatrick_annotations, args.fitzpatrick_images,
                                 args.fitzpatrick_metadata, args.ddi_annotations, args.ddi_images, args.ddi_metadata,
                                 args.phrasings, args.seed, args.max_side, args.max_pixels, args.workers, args.overwrite,
                                 max_bytes=args.max_bytes)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    print_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
