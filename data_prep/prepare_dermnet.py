"""Dermnet (Kaggle) -> step-2 training set: each image captioned with its SkinGPT-4 class (docs/datasets.md).

    python -m data_prep.prepare_dermnet --root dermnet --split train --out data/prepared/dermnet
    python -m data_prep.prepare_dermnet --root dermnet --split test  --out data/prepared/dermnet_test
    python -m data_prep.prepare_dermnet --root dermnet --split train --out data/prepared/dermnet --val-fraction 0.1
        # also holds out 10% of every class into data/prepared/dermnet_val (--val-out), for the validation loss
        # and the calibration's validation split

The 23 folders map to the paper's 15 classes + Others through the one class table (default:
skingpt4/common/classes.json; pass an edited copy with --mapping). Folders the paper does not place go to Others, or are left out with --drop-ambiguous. A folder the mapping does not know is an error (or, with
--skip-unknown, skipped and counted): it is never guessed. Each record: image_id, caption, label (class),
folder, split.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: its imports need the package form
    raise SystemExit("run it from the repository root as: python -m data_prep.prepare_dermnet ...")

import argparse
import difflib
import random
import re
from pathlib import Path
from typing import Any, Optional

from data_prep.common import (DEFAULT_MAX_SIDE, PrepareError, Skips, add_image_args, entry_problem, prepare_output,
                            print_report, stable_choice, write_prepared)
from skingpt4.common.class_table import CLASS_TABLE, ClassTableError, dermnet_mapping
from skingpt4.common.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES

DEFAULT_MAPPING = CLASS_TABLE  # the one class table, skingpt4/common/classes.json


def load_mapping(path: Path = DEFAULT_MAPPING) -> dict[str, Any]:
    """The Dermnet part of a class table (skingpt4/common/classes.json or an edited copy): see
    `skingpt4.common.class_table.dermnet_mapping`."""
    try:
        return dermnet_mapping(path)
    except ClassTableError as err:
        raise PrepareError(str(err)) from None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def prepare_dermnet(root: Path, split: str, out: Path, mapping_path: Path = DEFAULT_MAPPING,
                    drop_ambiguous: bool = False, skip_unknown: bool = False, phrasings: str = "fixed",
                    seed: int = 0, max_side: int = DEFAULT_MAX_SIDE, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                    workers: int = 1, overwrite: bool = False, log=print,
                    max_bytes: Optional[int] = DEFAULT_MAX_BYTES, val_fraction: float = 0.0,
                    val_out: Optional[Path] = None) -> dict[str, Any]:
    """Prepare `split` into `out`; with `val_fraction` > 0 a class-stratified share of it goes to `val_out`
    (default: `<out>_val`) instead, chosen with `seed` (`stratified_holdout`). Returns `out`'s report."""
    if not 0 <= val_fraction < 1:
        raise PrepareError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    mapping = load_mapping(mapping_path)
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise PrepareError(f"no folder '{split_dir}': --root must contain the Dermnet '{split}/' folder")
    skips = Skips()
    folders = []
    for entry in sorted(split_dir.iterdir()):
        problem = entry_problem(entry)
        if problem and problem[0] == "subfolder":
            folders.append(entry.name)
        else:  # a file (or link, FIFO, ...) beside the class folders belongs to no class
            skips.add("not_in_a_class_folder", entry.name, problem[1] if problem else "a file")
    unknown = [f for f in folders if f not in mapping["folders"]]
    if unknown and not skip_unknown:
        hints = []
        for folder in unknown:
            close = difflib.get_close_matches(folder, list(mapping["folders"]), n=1)
            hints.append(f"{folder!r}" + (f" (close to {close[0]!r})" if close else ""))
        raise PrepareError(f"{len(unknown)} Dermnet folder(s) not in the mapping '{mapping_path}': "
                           f"{', '.join(hints)}. Add them to a class's 'dermnet_folders' in a copy of the class table "
                           "(--mapping), or pass --skip-unknown to leave them out")
    ambiguous = set(mapping.get("ambiguous", []))
    records, sources = [], {}
    for folder in folders:
        label = mapping["folders"].get(folder)
        reason = ("unknown_folder" if folder in unknown else "dropped_ambiguous" if drop_ambiguous and folder in ambiguous
                  else "dropped_by_mapping" if label is None else None)
        for path in sorted((split_dir / folder).iterdir()):
            problem = entry_problem(path)
            if reason:
                skips.add(reason, f"{folder}/{path.name}")
            elif problem:  # subfolder, dangling_link, special_file (a FIFO is never opened: it would hang)
                skips.add(problem[0], f"{folder}/{path.name}", problem[1])
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skips.add("not_an_image_file", f"{folder}/{path.name}")
            else:
                image_id = f"{slug(folder)}__{slug(path.stem)}"
                if image_id in sources:
                    skips.add("duplicate_name", f"{folder}/{path.name}", f"same id as {sources[image_id]}")
                    continue
                template = mapping["caption"] if phrasings == "fixed" else stable_choice(
                    [mapping["caption"], *mapping.get("varied_captions", [])], image_id, seed)
                records.append({"image_id": image_id, "caption": template.format(phrase=mapping["classes"][label]),
                                "label": label, "folder": folder, "split": split})
                sources[image_id] = str(path)
    describe = {"kind": "dermnet", "split": split, "mapping": mapping, "drop_ambiguous": drop_ambiguous,
                "phrasings": phrasings, "seed": seed, "max_side": max_side}
    if not val_fraction:
        prepare_output(out, overwrite)
        return write_prepared(out, records, sources, skips, describe, max_side, max_pixels, workers, log, max_bytes)
    val_out = Path(val_out) if val_out else Path(out).with_name(Path(out).name + "_val")
    if Path(val_out).resolve() == Path(out).resolve():
        raise PrepareError(f"--val-out must differ from --out ('{out}')")
    train_records, val_records = stratified_holdout(records, val_fraction, seed)
    prepare_output(out, overwrite)
    prepare_output(val_out, overwrite)
    split_info = {"val_fraction": val_fraction, "train_out": str(out), "val_out": str(val_out),
                  "stratified_by": "label", "seed": seed}
    val_report = write_prepared(val_out, [{**r, "split": f"{split}_val"} for r in val_records], sources, Skips(),
                                {**describe, "split": f"{split}_val", "holdout": split_info}, max_side, max_pixels,
                                workers, log, max_bytes)
    report = write_prepared(out, train_records, sources, skips, {**describe, "holdout": split_info}, max_side,
                            max_pixels, workers, log, max_bytes)
    report["validation"] = {"out": str(val_out), "written": val_report["written"], "skipped": val_report["skipped"]}
    return report


def stratified_holdout(records: list[dict[str, Any]], fraction: float, seed: int
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """-> (kept, held out): of every class, round(fraction x n) records (at least 1 of a class with 2 or more,
    never all of it), chosen by a seeded shuffle of the class's records in image_id order, so the split is the
    same on every run and machine and each class keeps its share on both sides."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["image_id"]):
        by_label.setdefault(record["label"], []).append(record)
    held = set()
    for label, members in sorted(by_label.items()):
        count = 0 if len(members) < 2 else min(len(members) - 1, max(1, round(fraction * len(members))))
        order = list(range(len(members)))
        random.Random(f"holdout:{seed}:{label}").shuffle(order)
        held.update(members[i]["image_id"] for i in order[:count])
    return ([r for r in records if r["image_id"] not in held], [r for r in records if r["image_id"] in held])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="Dermnet folder holding train/ and test/")
    parser.add_argument("--split", default="train", help="sub-folder to prepare (train or test)")
    parser.add_argument("--out", type=Path, required=True, help="prepared folder to write")
    parser.add_argument("--mapping", type=Path, default=DEFAULT_MAPPING, help="folder -> class mapping file (JSON)")
    parser.add_argument("--drop-ambiguous", action="store_true", help="leave out the folders listed as 'ambiguous'")
    parser.add_argument("--skip-unknown", action="store_true", help="skip (and count) folders the mapping lacks")
    parser.add_argument("--phrasings", choices=("fixed", "varied"), default="fixed",
                        help="'varied' also uses the mapping's optional 'varied_captions'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the varied phrasings and of the validation split")
    parser.add_argument("--val-fraction", type=fraction_arg, default=0.0, metavar="F",
                        help="hold out this share of every class (0 <= F < 1) as a validation set (default 0: none)")
    parser.add_argument("--val-out", type=Path, help="folder of the validation set (default: <out>_val)")
    add_image_args(parser)
    args = parser.parse_args(argv)
    try:
        report = prepare_dermnet(args.root, args.split, args.out, args.mapping, args.drop_ambiguous,
                                 args.skip_unknown, args.phrasings, args.seed, args.max_side, args.max_pixels,
                                 args.workers, args.overwrite, max_bytes=args.max_bytes, val_fraction=args.val_fraction,
                                 val_out=args.val_out)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    print_report(report, args.out)
    if "validation" in report:
        print_report(report["validation"], Path(report["validation"]["out"]))
    return 0


def fraction_arg(text: str) -> float:
    """argparse type: a number in [0, 1) (a wrong value is argparse's one-line usage error, exit status 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
