"""Shared pieces of the preparation commands: the prepared-folder writer, skip accounting, CSV reading
with errors that name the file, line and column, and deterministic output (same input -> same bytes)."""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import stat
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from PIL import Image
from tqdm.auto import tqdm

from skingpt4.common.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, load_image

JPEG_QUALITY = 95
DEFAULT_MAX_SIDE = 1024  # longer side of prepared images; the model sees 224x224 crops of them


class PrepareError(ValueError):
    """Input the user must fix (bad CSV, unknown folder, output in the way); the message says where."""


@dataclass
class Skips:
    """Rows/files left out, by named reason, with the first few examples of each for the report."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    max_examples: int = 20

    def add(self, reason: str, item: str, detail: str = "") -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append({"item": item, "detail": detail} if detail else {"item": item})

    def as_dict(self) -> dict[str, Any]:
        return {reason: {"count": self.counts[reason], "examples": self.examples[reason]}
                for reason in sorted(self.counts)}

    def summary(self) -> str:
        """'image_missing=2, subfolder=1' ('' when nothing was skipped)."""
        return ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))


def entry_problem(path: Path) -> Optional[tuple[str, str]]:
    """None for a regular file (or a link to one); else (skip reason, what it is) for a folder entry a preparation
    cannot read as an image: `subfolder`, `dangling_link`, or `special_file` (FIFO, socket, device: opening a FIFO
    to read it would hang). Uses lstat/stat only, never opens the entry."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return ("dangling_link", "a symbolic link to nothing") if os.path.islink(path) else ("dangling_link", "gone")
    except OSError as err:
        return "special_file", f"cannot stat: {err.strerror or err}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "subfolder", "a folder"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return "special_file", kind


# ---------------------------------------------------------------- CSV
def read_csv(path: Path, required: Sequence[str], what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """-> (header, [(line number, row)]). Columns are found by name; a missing one is an error naming it."""
    if not path.is_file():
        raise PrepareError(f"{what}: no such file '{path}'")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise PrepareError(f"{what} '{path}' is empty (no header line)") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise PrepareError(f"{what} '{path}': missing column {', '.join(repr(c) for c in missing)} "
                               f"(columns present: {', '.join(repr(h) for h in header)})")
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise PrepareError(f"{what} '{path}' line {reader.line_num}: {len(row)} fields, header has {len(header)}")
            rows.append((reader.line_num, dict(zip(header, row))))
    return header, rows


def parse_flag(value: str, path: Path, line: int, column: str) -> int:
    """SKINCON 0/1 cell -> 0 or 1 (also 0.0/1.0, as some spreadsheet exports write them)."""
    text = value.strip()
    if text in ("0", "0.0"):
        return 0
    if text in ("1", "1.0"):
        return 1
    raise PrepareError(f"'{path}' line {line}, column '{column}': expected 0 or 1, got {value!r}")


# ---------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageJob:
    image_id: str
    source: str              # path of the original image
    max_side: int
    max_pixels: Optional[int]
    max_bytes: Optional[int] = DEFAULT_MAX_BYTES


def encode_image(job: ImageJob) -> tuple[str, Optional[bytes], Optional[str], Optional[str]]:
    """Original -> RGB, upright, at most max_side, JPEG bytes. -> (image_id, bytes, reason, detail)."""
    try:
        # 0 = no limit, as for max_side
        img = load_image(job.source, max_pixels=job.max_pixels or None, max_bytes=job.max_bytes or None)
    except ImageError as err:
        return job.image_id, None, err.reason, err.detail
    if job.max_side and max(img.size) > job.max_side:
        scale = job.max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=JPEG_QUALITY)
    return job.image_id, out.getvalue(), None, None


def encode_images(jobs: Sequence[ImageJob], workers: int) -> Iterator[tuple[str, Optional[bytes], Optional[str], Optional[str]]]:
    """encode_image over `jobs`, yielded in order as they finish (so the JPEG bytes of a large set are never
    all held in memory); `workers` > 1 uses that many processes."""
    if workers <= 1:
        yield from map(encode_image, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(encode_image, jobs, chunksize=16)


# ---------------------------------------------------------------- prepared folder
def prepare_output(out: Path, overwrite: bool) -> None:
    """Make `out` ready: refuse to mix with an earlier preparation unless `overwrite` (then remove only what
    a preparation writes: image/, filter_cap.json, prepare_report.json)."""
    ours = [out / "image", out / "filter_cap.json", out / "prepare_report.json"]
    if any(p.exists() for p in ours):
        if not overwrite:
            raise PrepareError(f"'{out}' already holds a prepared set; pass --overwrite to replace it")
        shutil.rmtree(out / "image", ignore_errors=True)
        for p in ours[1:]:
            p.unlink(missing_ok=True)
    (out / "image").mkdir(parents=True)


def write_json(path: Path, data: Any) -> None:
    """Deterministic JSON (sorted keys), written to a temp file then renamed: a killed run leaves no half file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_prepared(out: Path, records: list[dict[str, Any]], sources: dict[str, str], skips: Skips,
                   describe: dict[str, Any], max_side: int, max_pixels: Optional[int], workers: int,
                   log: Callable[[str], None] = print, max_bytes: Optional[int] = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Encode each record's image (`sources[image_id]`) into out/image/<image_id>.jpg; records whose image
    is bad are skipped by reason. Writes filter_cap.json (sorted by image_id) and prepare_report.json last.
    A progress bar runs on stderr when it is a terminal."""
    jobs = [ImageJob(r["image_id"], sources[r["image_id"]], max_side, max_pixels, max_bytes) for r in records]
    by_id = {r["image_id"]: r for r in records}
    kept = []
    results = encode_images(jobs, workers)
    for image_id, data, reason, detail in tqdm(results, total=len(jobs), desc="images", unit="image", disable=None):
        if data is None:
            skips.add(f"image_{reason}", image_id, detail)
        else:
            (out / "image" / f"{image_id}.jpg").write_bytes(data)
            kept.append(by_id[image_id])
    kept.sort(key=lambda r: r["image_id"])
    report = {**describe, "written": len(kept), "skipped": skips.as_dict()}
    write_json(out / "prepare_report.json", report)
    write_json(out / "filter_cap.json", {"annotations": kept})
    if not kept:  # an empty training set is never what was asked for
        reasons = skips.summary() or "no records found"
        raise PrepareError(f"wrote 0 image-caption pairs to '{out}' ({reasons}); see {out / 'prepare_report.json'}, "
                           "fix the input or the options and run again with --overwrite")
    return report


def print_report(report: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> None:
    log(f"wrote {report['written']} image-caption pairs to {out}")
    print_skips(report["skipped"], log)


def print_skips(skipped: dict[str, Any], log: Callable[[str], None] = print) -> None:
    """One line per skip reason (a `Skips.as_dict()`), with its count and first example."""
    for reason, info in skipped.items():
        first = info["examples"][0]
        log(f"  skipped {info['count']:6d} {reason}  (e.g. {first['item']}{': ' + first['detail'] if 'detail' in first else ''})")


def index_files(root: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """file name -> path for every entry under `root` named like an image (recursive; the first in sorted order
    wins). Folders are left out; FIFOs, devices and dangling links are kept, so that the image loader refuses them
    with their own reason (`image_not_a_file`, `image_missing` "a dangling symbolic link") instead of their
    records being counted as plain `image_missing`."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in suffixes and entry_problem(path) != ("subfolder", "a folder"):
            found.setdefault(path.name, path)
    return found


def stable_choice(options: Sequence[str], key: str, seed: int) -> str:
    """Pick one of `options` from a hash of (seed, key): the same on every run and machine."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def count_arg(minimum: int, zero_means: str = ""):
    """argparse type: an integer >= minimum (a wrong value is argparse's one-line usage error, exit status 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}{zero_means}, got {value}")
        return value
    return parse


def add_limit_args(parser) -> None:
    """--max-pixels and --max-bytes: the image loader's caps (skingpt4.common.images), 0 = no limit."""
    parser.add_argument("--max-pixels", type=count_arg(0, " (0 = no limit)"), default=DEFAULT_MAX_PIXELS,
                        help=f"skip images with more pixels than this, a decompression-bomb guard (0 = no limit; "
                             f"default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--max-bytes", type=count_arg(0, " (0 = no limit)"), default=DEFAULT_MAX_BYTES,
                        help=f"skip image files larger than this, checked before reading them (0 = no limit; "
                             f"default {DEFAULT_MAX_BYTES})")


def add_image_args(parser) -> None:
    parser.add_argument("--max-side", type=count_arg(0, " (0 = keep size)"), default=DEFAULT_MAX_SIDE,
                        help=f"shrink images whose longer side exceeds this (0 = keep size; default {DEFAULT_MAX_SIDE})")
    add_limit_args(parser)
    parser.add_argument("--workers", type=count_arg(1), default=1, help="processes that decode and encode images")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier preparation in --out")
