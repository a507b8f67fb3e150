"""Prepared folder -> webdataset `.tar` shards (one `jpg` + one `json` record with the caption per sample),
for large sets and remote storage (docs/datasets.md).

    python -m data_prep.write_shards --src data/prepared/skincon --out data/shards/skincon --maxcount 1000

Shards are named shard-000000.tar, ...; samples keep the folder's (sorted) order and fixed tar metadata, so
the same folder always gives byte-identical shards. shards.json lists the shards and the sample count.
Point a `webdataset` dataset at the output folder (docs/datasets.md).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: its imports need the package form
    raise SystemExit("run it from the repository root as: python -m data_prep.write_shards ...")

import argparse
import io
import re
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image

from data_prep.common import PrepareError, write_json
from skingpt4.datasets.image_text_pairs import index_images, read_annotations
from skingpt4.common.config import ConfigError


def shard_key(image_id: str) -> str:
    # webdataset splits a member name at its first dot into key and extension: keep dots out of keys.
    return re.sub(r"[^A-Za-z0-9_-]+", "_", image_id)


def jpeg_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return data
    out = io.BytesIO()  # prepared folders hold JPEGs; a notes folder may hold PNGs
    Image.open(io.BytesIO(data)).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


def write_shards(src: Path, out: Path, maxcount: int = 1000, overwrite: bool = False) -> dict[str, Any]:
    try:
        records = read_annotations(Path(src) / "filter_cap.json")
    except ConfigError as err:
        raise PrepareError(str(err)) from err
    files = index_images(Path(src) / "image")
    existing = sorted(Path(out).glob("shard-*.tar"))
    if existing and not overwrite:
        raise PrepareError(f"'{out}' already holds shards; pass --overwrite to replace them")
    for path in existing:
        path.unlink()
    Path(out).mkdir(parents=True, exist_ok=True)
    missing = [r["image_id"] for r in records if str(r.get("image", r["image_id"])) not in files]
    if missing:
        raise PrepareError(f"{len(missing)} records of '{src}' have no image in image/ (first: {missing[0]!r}); "
                           "check the folder with data_prep/check_notes.py")
    keys = set()
    with wds.ShardWriter(str(Path(out) / "shard-%06d.tar"), maxcount=maxcount, verbose=0, mtime=0) as sink:
        for record in sorted(records, key=lambda r: str(r["image_id"])):
            key = shard_key(str(record["image_id"]))
            if key in keys:
                raise PrepareError(f"two records of '{src}' map to the same shard key {key!r}")
            keys.add(key)
            meta = {k: v for k, v in record.items() if k != "image"}
            sink.write({"__key__": key, "jpg": jpeg_bytes(Path(src) / "image" / files[str(record.get("image", record["image_id"]))]),
                        "json": meta})
    shards = sorted(p.name for p in Path(out).glob("shard-*.tar"))
    index = {"shards": shards, "count": len(records), "maxcount": maxcount}
    write_json(Path(out) / "shards.json", index)
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="prepared folder (filter_cap.json + image/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for shard-NNNNNN.tar")
    parser.add_argument("--maxcount", type=int, default=1000, help="samples per shard")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards in --out")
    args = parser.parse_args(argv)
    try:
        index = write_shards(args.src, args.out, args.maxcount, args.overwrite)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    print(f"wrote {index['count']} samples in {len(index['shards'])} shard(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
