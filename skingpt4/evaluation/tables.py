"""Small helpers every evaluation task uses: CSV/JSON writing, a plain-text table for the terminal, and a
matplotlib figure saved as PNG without a display."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402


def write_csv(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return path


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Fixed-width text table (for printing a comparison to the terminal)."""
    cells = [[str(c) for c in columns]] + [[str(_cell(row.get(c, ""))) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def pct(part: float, whole: float) -> float:
    """Percentage rounded to 2 decimals; NaN when there is nothing to divide by."""
    return round(100.0 * part / whole, 2) if whole else math.nan


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else math.nan


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 4)
    return value


def none_if_nan(value: float):
    """JSON has no NaN: undefined values are written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def finish_task(out: Path, summary: dict, problems: list) -> dict:
    """Every task ends here: summary.json and problems.json written, the skipped cases printed."""
    summary["problems"] = len(problems)
    write_json(out / "problems.json", problems)
    write_json(out / "summary.json", summary)
    for p in problems:
        print(f"skipped case {p['case_id']}: {p['reason']}")
    return summary


def clean_nan(data):
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(data, dict):
        return {k: clean_nan(v) for k, v in data.items()}
    if isinstance(data, list):
        return [clean_nan(v) for v in data]
    return none_if_nan(data)


LABEL_CHARS = 24  # the longest case label on a plot axis


def _shorten(text: str, width: int) -> str:
    """`text`, or its start and end around an ellipsis, in at most `width` characters."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (width - 1 - head):]


def _initials(folder: str) -> str:
    words = folder.replace("_", " ").replace("-", " ").split()
    return "".join(word[0] for word in words if word[0].isalnum())[:4]


def _distinct(labels: list[str], relabel) -> list[str]:
    """`labels`, with every label that occurs more than once replaced by `relabel(index)`."""
    counts = {label: labels.count(label) for label in labels}
    return [relabel(i) if counts[label] > 1 else label for i, label in enumerate(labels)]


def short_labels(case_ids: Sequence[str], width: int = LABEL_CHARS) -> list[str]:
    """Readable axis labels of at most `width` characters, one per case and all different: the file name of a
    case id ('Eczema Photos/synthetic-test-05-0003' -> 'synthetic-test-05-0003'); where file names repeat across
    folders, the folder's initials in front ('EP/case-0'); shortened around an ellipsis; numbered if still equal."""
    ids = [str(c).rstrip("/") for c in case_ids]
    stems = [c.rsplit("/", 1)[-1] for c in ids]
    labels = [_shorten(stem, width) for stem in stems]
    labels = _distinct(labels, lambda i: _shorten(f"{_initials(ids[i].rsplit('/', 1)[0])}/{stems[i]}"
                                                  if "/" in ids[i] else stems[i], width))
    return _distinct(labels, lambda i: _shorten(f"{i + 1}:{labels[i]}", width))
