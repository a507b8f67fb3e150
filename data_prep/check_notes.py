"""Check a doctors' notes folder in the SkinGPT-4 / MiniGPT-4 format and, optionally, write a clean copy.

    python -m data_prep.check_notes --dir notes                       # report only (exit 1 if problems)
    python -m data_prep.check_notes --dir notes --out data/prepared/notes   # also write the usable records

Format: <dir>/filter_cap.json = {"annotations": [{"image_id": ..., "caption": ...}, ...]} with the images
in <dir>/image/ (<image_id>.jpg, or any image file whose stem is the image_id). Reported: malformed
records, missing images, empty captions, duplicate image_ids (the first is kept), duplicate image+caption
pairs, and images that cannot be decoded (by named reason). The clean copy has the same format, images
re-encoded like the other prepared sets (RGB, upright, JPEG).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: its imports need the package form
    raise SystemExit("run it from the repository root as: python -m data_prep.check_notes ...")

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from data_prep.common import (ImageJob, PrepareError, Skips, add_image_args, encode_images, prepare_output,
                            print_report, write_prepared)
from skingpt4.common.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES



def check_notes(folder: Path, decode: bool = True, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                workers: int = 1, max_bytes: Optional[int] = DEFAULT_MAX_BYTES) -> tuple[list[dict[str, Any]], dict[str, str], Skips]:
    """-> (usable records, {image_id: image path}, problems by reason)."""
    ann_path, image_dir = Path(folder) / "filter_cap.json", Path(folder) / "image"
    if not ann_path.is_file():
        raise PrepareError(f"no '{ann_path}': a notes folder holds filter_cap.json and image/")
    if not image_dir.is_dir():
        raise PrepareError(f"no '{image_dir}': a notes folder holds filter_cap.json and image/")
    try:
        data = json.loads(ann_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PrepareError(f"'{ann_path}' is not valid JSON: {err}") from err
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise PrepareError(f"'{ann_path}' must hold {{\"annotations\": [...]}}")
    files: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            files.setdefault(path.name, path)
            files.setdefault(path.stem, path)
    skips, records, sources, pairs = Skips(), [], {}, set()
    for index, record in enumerate(annotations):
        where = f"annotations[{index}]"
        if not isinstance(record, dict) or "image_id" not in record or "caption" not in record:
            skips.add("malformed_record", where, f"needs image_id and caption, got {record!r:.120}")
            continue
        image_id, caption = str(record["image_id"]), record["caption"]
        if not isinstance(caption, str) or not caption.strip():
            skips.add("empty_caption", f"{where} ({image_id})")
            continue
        if (image_id, caption.strip()) in pairs:
            skips.add("duplicate_pair", f"{where} ({image_id})")
            continue
        if image_id in sources:
            skips.add("duplicate_image_id", f"{where} ({image_id})", "an earlier record has this image_id; kept the first")
            continue
        path = files.get(image_id)
        if path is None:
            skips.add("image_missing", f"{where} ({image_id})", f"no {image_id}.jpg (or other image) in {image_dir}")
            continue
        pairs.add((image_id, caption.strip()))
        records.append({**record, "image_id": image_id, "caption": " ".join(caption.split())})
        sources[image_id] = str(path)
    if decode:  # decode every image now so a bad one is found here, not in the middle of training
        jobs = [ImageJob(r["image_id"], sources[r["image_id"]], 0, max_pixels, max_bytes) for r in records]
        bad = {image_id: (reason, detail) for image_id, data, reason, detail in encode_images(jobs, workers) if data is None}
        for image_id, (reason, detail) in bad.items():
            skips.add(f"image_{reason}", image_id, detail)
        records = [r for r in records if r["image_id"] not in bad]
    return records, sources, skips


def print_problems(folder: Path, usable: int, skips: Skips) -> None:
    print(f"{folder}: {usable} usable records, {sum(skips.counts.values())} problems")
    for reason, info in skips.as_dict().items():
        for example in info["examples"]:
            print(f"  {reason}: {example['item']}{': ' + example['detail'] if 'detail' in example else ''}")
        if info["count"] > len(info["examples"]):
            print(f"  {reason}: ... {info['count'] - len(info['examples'])} more")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="notes folder: filter_cap.json + image/")
    parser.add_argument("--out", type=Path, help="write the usable records as a prepared folder here")
    parser.add_argument("--no-decode", action="store_true", help="only check that image files exist (faster)")
    add_image_args(parser)
    args = parser.parse_args(argv)
    try:
        # With --out every image is decoded while writing the copy, so the check need not decode it first.
        records, sources, skips = check_notes(args.dir, not (args.no_decode or args.out), args.max_pixels, args.workers,
                                               args.max_bytes)
        if args.out:
            prepare_output(args.out, args.overwrite)
            report = write_prepared(args.out, records, sources, skips, {"kind": "notes", "max_side": args.max_side},
                                    args.max_side, args.max_pixels, args.workers, max_bytes=args.max_bytes)
        print_problems(args.dir, report["written"] if args.out else len(records), skips)
        if args.out:
            print_report(report, args.out)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    return 1 if skips.counts else 0


if __name__ == "__main__":
    raise SystemExit(main())
