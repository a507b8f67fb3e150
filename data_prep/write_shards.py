"""Prepared folder -> webdataset `.tar` shards (one `jpg` + one `json` record with the caption per sample),
for large sets and remote storage (docs/datasets.md).

    python -m data_prep.write_shards --src data/prepared/skincon --out data/shards/skincon --maxcount 1000

Shards are named shard-000000.tar, ...; samples keep the folder's (sorted) order and fixed tar metadata, so
the same folder always gives byte-identical shards. Every image is decoded by the safe loader first; records
whose image is missing or unusable are skipped and counted by reason. shards.json lists the shards, the sample
count and the skips; it is written last, after the complete shards were moved into place from a staging folder
(no partial shard after a failure or a kill). Point a `webdataset` dataset at the output folder (docs/datasets.md).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: its imports need the package form
    raise SystemExit("run it from the repository root as: python -m data_prep.write_shards ...")

import argparse
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import webdataset as wds
from tqdm.auto import tqdm

from data_prep.common import PrepareError, Skips, add_limit_args, count_arg, print_skips, write_json
from skingpt4.common.config import ConfigError
from skingpt4.common.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, load_image, read_regular_file
from skingpt4.datasets.image_text_pairs import index_images, read_annotations

STAGING_PREFIX = ".shards-tmp-"  # where a run writes its shards before it moves them into place


def shard_key(image_id: str) -> str:
    # webdataset splits a member name at its first dot into key and extension: keep dots out of keys.
    return re.sub(r"[^A-Za-z0-9_-]+", "_", image_id)


def jpeg_bytes(path: Path, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
               max_bytes: Optional[int] = DEFAULT_MAX_BYTES) -> bytes:
    """The sample's JPEG: a JPEG file's own bytes (unchanged, so shards hold the prepared image exactly), other
    formats re-encoded. Either way the image is read and decoded by the one safe loader first (regular files only,
    size caps before reading and decoding), so a bad file is an ImageError with a reason, never a hang or a crash."""
    data = read_regular_file(path, max_bytes)
    img = load_image(data, max_pixels=max_pixels, name=str(path), max_bytes=max_bytes)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return data
    out = io.BytesIO()  # prepared folders hold JPEGs; a notes folder may hold PNGs
    img.save(out, "JPEG", quality=95)
    return out.getvalue()

def sweep_staging(out: Path) -> None:
    """Remove what a run killed while writing left behind (its staging folders: never read as shards)."""
    for stale in Path(out).glob(STAGING_PREFIX + "*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def write_shards(src: Path, out: Path, maxcount: int = 1000, overwrite: bool = False,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, max_bytes: Optional[int] = DEFAULT_MAX_BYTES,
                 progress: bool = False) -> dict[str, Any]:
    """Write `src`'s records as shards into `out`. Records whose image is missing or unusable are skipped and
    counted by reason (`image_<reason>`, as the preparation commands count them) in shards.json's "skipped".

    Atomic: the shards are written into a hidden staging folder inside `out` and moved into place only once
    all are complete; shards.json (the index readers trust) is removed first and written last. A failure
    removes the staging folder; a killed run's is swept by the next run. Either way no partial shard-*.tar."""
    src, out = Path(src), Path(out)
    try:
        records = read_annotations(src / "filter_cap.json")
    except ConfigError as err:
        raise PrepareError(str(err)) from err
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out '{out}' is a file, not a folder")
    existing = sorted(out.glob("shard-*.tar"))
    if existing and not overwrite:
        raise PrepareError(f"'{out}' already holds shards; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    sweep_staging(out)
    files = index_images(src / "image")
    skips, keys, count = Skips(), {}, 0
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        ordered = sorted(records, key=lambda r: str(r["image_id"]))
        with wds.ShardWriter(str(staging / "shard-%06d.tar"), maxcount=maxcount, verbose=0, mtime=0) as sink:
            for record in tqdm(ordered, desc="shards", unit="image", disable=not progress):
                image_id = str(record["image_id"])
                key = shard_key(image_id)
                if key in keys:
                    raise PrepareError(f"records {keys[key]!r} and {image_id!r} of '{src}' map to the same shard "
                                       f"key {key!r}")
                keys[key] = image_id
                name = files.get(str(record.get("image", image_id)))
                if name is None:
                    skips.add("image_missing", image_id, "no image in image/")
                    continue
                try:
                    jpg = jpeg_bytes(src / "image" / name, max_pixels, max_bytes)
                except ImageError as err:
                    skips.add(f"image_{err.reason}", image_id, err.detail)
                    continue
                sink.write({"__key__": key, "jpg": jpg, "json": {k: v for k, v in record.items() if k != "image"}})
                count += 1
        if not count:
            raise PrepareError(f"no usable sample in '{src}' ({skips.summary() or 'no records'}); nothing written")
        shards = sorted(p.name for p in staging.glob("shard-*.tar"))
        (out / "shards.json").unlink(missing_ok=True)
        for old in existing:
            if old.name not in shards:
                old.unlink()
        for shard in shards:
            os.replace(staging / shard, out / shard)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    index = {"shards": shards, "count": count, "maxcount": maxcount, "skipped": skips.as_dict()}
    write_json(out / "shards.json", index)
    return index

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="prepared folder (filter_cap.json + image/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for shard-NNNNNN.tar")
    parser.add_argument("--maxcount", type=count_arg(1), default=1000, help="samples per shard")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards in --out")
    add_limit_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        index = write_shards(args.src, args.out, args.maxcount, args.overwrite, args.max_pixels or None,
                             args.max_bytes or None, progress=not args.no_progress)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    print(f"wrote {index['count']} samples in {len(index['shards'])} shard(s) to {args.out}")
    print_skips(index["skipped"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
