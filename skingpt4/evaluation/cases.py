"""Which images to evaluate, and what is known about each (class label, skin type, SKINCON concepts).

`evaluation.cases` names one of:
  - a folder of images, searched recursively; case id = path inside the folder without the suffix. When
    the first folder level is a Dermnet folder or a class name (the Dermnet `test/` layout), it gives
    the label.
  - a CSV with the column `image` (a path, relative to the CSV's folder) and optional `case_id`, `label`
    (class name or Dermnet folder), `skin_type` (e.g. Fitzpatrick I..VI or DDI I-II/III-IV/V-VI) and
    `concepts` (SKINCON column names separated by ';').
  - a prepared folder with `filter_cap.json` (`data_prep/prepare_*.py` output): records' `image_id` (image in
    `image/<image_id>.jpg`), and `label`, `skin_type`, `concepts` when present.
With `label_from_diagnosis`, a case without `label` but with a fine-grained `diagnosis` (Fitzpatrick17k's
`label`, DDI's `disease`, as the SKINCON preparation keeps them) gets the class the class extractor reads in
that diagnosis ("basal-cell-carcinoma" -> Malignant lesions); a diagnosis naming no class drops the case.
Nothing is opened here: a missing or unreadable image is found when the case runs, reported, and skipped.

Smaller sets are drawn **stratified by class, with a seed** (`select_cases`), never as the first N rows (which,
in a folder sorted by class, would cover two or three classes): `evaluation.cases_per_class: N` takes N cases of
every class, `evaluation.limit: N` takes N cases spread as evenly as possible over the classes; the draw is a
function of `evaluation.seed` alone. The paper's sets (docs/evaluation.md): 150 cases = 10 per class of its 15
classes, 45 cases (consistency) = 3 per class. To write such a set as a case CSV once and evaluate it again
and again:

    python -m skingpt4.evaluation.cases --cases data/prepared/dermnet_test --cases-per-class 10 \
        --exclude-class Others --seed 0 --out cases/paper_150.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from skingpt4.common.images import IMAGE_SUFFIXES
from skingpt4.evaluation.extract import UNKNOWN, ClassExtractor



@dataclass
class Case:
    case_id: str
    image: Path
    label: Optional[str] = None           # one of the classes, when known
    skin_type: Optional[str] = None
    concepts: Optional[list[str]] = None  # true SKINCON concepts, when known


class CaseError(ValueError):
    """The case list itself is unusable (not a single bad case: those are reported and skipped)."""


def load_cases(source: str | Path, extractor: ClassExtractor, unplaced_as: Optional[str] = "Others",
               limit: Optional[int] = None, label_from_diagnosis: bool = False, cases_per_class: Optional[int] = None,
               seed: int = 0) -> tuple[list[Case], list[dict]]:
    """-> (cases, dropped): dropped cases (e.g. an unplaced Dermnet folder with `unplaced_as=None`) are
    listed with the reason. Case ids must be unique. `cases_per_class` / `limit`: a class-stratified draw with
    `seed` (`select_cases`)."""
    path = Path(source)
    if path.is_dir() and (path / "filter_cap.json").is_file():
        cases, dropped = _from_prepared(path, extractor, unplaced_as, label_from_diagnosis)
    elif path.is_dir():
        cases, dropped = _from_folder(path, extractor, unplaced_as)
    elif path.is_file() and path.suffix.lower() == ".csv":
        cases, dropped = _from_csv(path, extractor, unplaced_as, label_from_diagnosis)
    else:
        raise CaseError(f"evaluation.cases: '{source}' is neither a folder of images, a folder with "
                        f"filter_cap.json, nor a .csv file")
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise CaseError(f"evaluation.cases '{source}': case id '{case.case_id}' appears twice")
        seen.add(case.case_id)
    if not cases:
        raise CaseError(f"evaluation.cases '{source}' holds no cases")
    return select_cases(cases, cases_per_class, limit, seed), dropped


def select_cases(cases: list[Case], cases_per_class: Optional[int] = None, limit: Optional[int] = None,
                 seed: int = 0) -> list[Case]:
    """A class-stratified draw: each class's cases (unlabelled ones form a group of their own) in an order
    shuffled by (seed, class); `cases_per_class` keeps the first N of each class (all of a smaller class), then
    `limit` takes cases round-robin over the classes (sorted by name) until N are chosen, so every class gets
    floor(N / classes) or one more while it has them. The chosen cases keep the source's order."""
    for key, value in (("evaluation.cases_per_class", cases_per_class), ("evaluation.limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CaseError(f"{key} must be a whole number >= 1 or null, got {value!r}")
    if cases_per_class is None and limit is None:
        return list(cases)
    groups: dict[str, list[int]] = {}
    for index, case in enumerate(cases):
        groups.setdefault(case.label if case.label is not None else "", []).append(index)
    for label, members in groups.items():
        random.Random(f"cases:{seed}:{label}").shuffle(members)  # str seeds hash with SHA-512: same on every run
        if cases_per_class is not None:
            del members[cases_per_class:]
    chosen: list[int] = []
    if limit is None:
        chosen = [i for members in groups.values() for i in members]
    else:
        queues = [list(groups[label]) for label in sorted(groups)]
        while len(chosen) < limit and any(queues):
            for queue in queues:
                if queue and len(chosen) < limit:
                    chosen.append(queue.pop(0))
    return [cases[i] for i in sorted(chosen)]


def _label(raw: Optional[str], extractor: ClassExtractor, unplaced_as: Optional[str], where: str,
           diagnosis: Optional[str] = None):
    """-> (label or None, why the case is dropped or None)."""
    if (raw is None or not str(raw).strip()) and diagnosis is not None and str(diagnosis).strip():
        label = extractor.extract(str(diagnosis)).label
        return (None, f"diagnosis '{diagnosis}' names none of the classes") if label == UNKNOWN else (label, None)
    if raw is None or not str(raw).strip():
        return None, None
    try:
        label = extractor.canonical(str(raw), unplaced_as)
    except ValueError as err:
        raise CaseError(f"{where}: {err}") from None
    return label, None if label is not None else f"label '{raw}' is not placed in a class"


def _from_folder(root: Path, extractor: ClassExtractor, unplaced_as):
    cases, dropped = [], []
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()):
        rel = image.relative_to(root)
        case_id = rel.with_suffix("").as_posix()
        folder = rel.parts[0] if len(rel.parts) > 1 else None
        known = folder is not None and (folder in extractor.dermnet_folders or folder in extractor.classes
                                        or folder in extractor.unplaced_dermnet_folders)
        label, drop = _label(folder, extractor, unplaced_as, str(image)) if known else (None, None)
        if drop:
            dropped.append({"case_id": case_id, "reason": f"Dermnet folder '{folder}' is not placed in a class"})
            continue
        cases.append(Case(case_id, image, label))
    return cases, dropped


def _from_csv(path: Path, extractor: ClassExtractor, unplaced_as, label_from_diagnosis: bool):
    cases, dropped = [], []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "image" not in (reader.fieldnames or ()):
            raise CaseError(f"cases CSV '{path}' needs an 'image' column; it has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if not (row.get("image") or "").strip():
                raise CaseError(f"{where}: empty 'image'")
            image = Path(row["image"].strip())
            image = image if image.is_absolute() else path.parent / image
            case_id = (row.get("case_id") or "").strip() or Path(row["image"].strip()).with_suffix("").as_posix()
            label, drop = _label(row.get("label"), extractor, unplaced_as, where,
                                 row.get("diagnosis") if label_from_diagnosis else None)
            if drop:
                dropped.append({"case_id": case_id, "reason": drop})
                continue
            concepts = _concepts(row.get("concepts"), where)
            cases.append(Case(case_id, image, label, (row.get("skin_type") or "").strip() or None, concepts))
    return cases, dropped


def _from_prepared(root: Path, extractor: ClassExtractor, unplaced_as, label_from_diagnosis: bool):
    try:
        records = json.loads((root / "filter_cap.json").read_text())["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CaseError(f"'{root / 'filter_cap.json'}' is not {{\"annotations\": [...]}}: {err}") from None
    cases, dropped = [], []
    for i, record in enumerate(records):
        where = f"{root / 'filter_cap.json'} record {i}"
        image_id = str(record.get("image_id", "")).strip()
        if not image_id:
            raise CaseError(f"{where}: no image_id")
        label, drop = _label(record.get("label"), extractor, unplaced_as, where,
                             record.get("diagnosis") if label_from_diagnosis else None)
        if drop:
            dropped.append({"case_id": image_id, "reason": drop})
            continue
        concepts = record.get("concepts")
        if concepts is not None and not isinstance(concepts, list):
            raise CaseError(f"{where}: 'concepts' must be a list of SKINCON column names")
        image = root / "image" / f"{image_id}.jpg"
        if not image.exists() and Path(image_id).suffix:
            image = root / "image" / image_id
        cases.append(Case(image_id, image, label, record.get("skin_type"), concepts))
    return cases, dropped


def _concepts(raw: Optional[str], where: str) -> Optional[list[str]]:
    if raw is None or not raw.strip():
        return None
    return [c.strip() for c in raw.split(";") if c.strip()]


# ------------------------------------------------------------------------------------------------ command line
def write_cases_csv(cases: list[Case], out: Path) -> None:
    """A case CSV (the format `evaluation.cases` reads), image paths relative to the CSV's folder when possible."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "image", "label", "skin_type", "concepts"])
        for case in cases:
            image = Path(case.image).resolve()
            try:
                shown = image.relative_to(out.parent.resolve()).as_posix()
            except ValueError:
                shown = str(image)
            writer.writerow([case.case_id, shown, case.label or "", case.skin_type or "",
                             ";".join(case.concepts or [])])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skingpt4.evaluation.cases",
        description="Draw a class-stratified case set (seeded) from any case source and write it as a case CSV.")
    parser.add_argument("--cases", required=True, help="folder of images, case CSV, or prepared folder")
    parser.add_argument("--out", type=Path, required=True, help="case CSV to write")
    parser.add_argument("--cases-per-class", type=int, help="N cases of every class (the paper: 10, and 3 for consistency)")
    parser.add_argument("--limit", type=int, help="N cases in all, spread evenly over the classes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--exclude-class", action="append", default=[], metavar="CLASS",
                        help="leave this class out (repeatable); the paper's sets have no Others")
    parser.add_argument("--class-file", help="class table (default: skingpt4/common/classes.json)")
    args = parser.parse_args(argv)
    try:
        extractor = ClassExtractor(args.class_file)
        unknown = [c for c in args.exclude_class if c not in extractor.classes]
        if unknown:
            raise CaseError(f"--exclude-class: {', '.join(map(repr, unknown))} is not a class; the classes: "
                            + ", ".join(extractor.classes))
        cases, _ = load_cases(args.cases, extractor)
        cases = [c for c in cases if c.label not in args.exclude_class]
        if not cases:
            raise CaseError(f"'{args.cases}' holds no cases outside the excluded classes")
        chosen = select_cases(cases, args.cases_per_class, args.limit, args.seed)
    except (CaseError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_cases_csv(chosen, args.out)
    counts = Counter(c.label or "(no label)" for c in chosen)
    print(f"wrote {len(chosen)} cases of {len(counts)} classes to {args.out}: "
          + ", ".join(f"{label} {n}" for label, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
