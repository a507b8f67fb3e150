"""The dermatologists' questionnaire of the paper (docs/evaluation.md): seven statements rated on a 5-point
scale for every case; aggregated into the Fig. 4a table (percent per rating per statement) and chart.

A questionnaire CSV has one row per (case, statement):
    case_id, statement_id, statement, rating, reviewer, comment
`write_blank` produces it with `rating` empty; a reviewer fills `rating` with a number 5..1, the words
("strongly agree", "agree", "neutral", "disagree", "strongly disagree") or SA/A/N/D/SD, and `reviewer`
with their name (left empty, the file's name is used). Several files (one per reviewer) or one file with
several reviewers are both fine.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from skingpt4.evaluation.tables import pct, save_figure, write_csv

# (id, statement, the paper's "strongly agree + agree" percentage)
STATEMENTS = (
    ("diagnosis", "The diagnosis is correct or relevant.", 80.63),
    ("informative", "The description is informative.", 82.50),
    ("useful", "The suggestions are useful.", 85.63),
    ("helps_doctors", "It helps doctors with diagnosis.", 87.50),
    ("helps_patients", "It helps patients understand their disease.", 83.70),
    ("privacy", "Local deployment protects patients' privacy.", 92.50),
    ("willing", "I am willing to use it.", 77.50),
)
STATEMENT_TEXT = {sid: text for sid, text, _ in STATEMENTS}
RATINGS = ("strongly agree", "agree", "neutral", "disagree", "strongly disagree")  # 5 .. 1
COLUMNS = ("case_id", "statement_id", "statement", "rating", "reviewer", "comment")
_SPELLINGS = {**{r: r for r in RATINGS}, **{str(5 - i): r for i, r in enumerate(RATINGS)},
              **dict(zip(("sa", "a", "n", "d", "sd"), RATINGS)), "neither agree nor disagree": "neutral"}


def write_blank(path: Path, case_ids: Iterable[str]) -> Path:
    rows = [{"case_id": cid, "statement_id": sid, "statement": text, "rating": "", "reviewer": "", "comment": ""}
            for cid in case_ids for sid, text, _ in STATEMENTS]
    return write_csv(path, rows, COLUMNS)


def parse_rating(value: str) -> Optional[str]:
    """'4', 'Agree', ' SA ' -> a RATINGS entry; None when not a rating."""
    return _SPELLINGS.get(" ".join(value.strip().lower().split()))


class QuestionnaireError(ValueError):
    """A questionnaire file that cannot be read at all (single bad rows are reported instead)."""


@dataclass
class Problem:
    file: str
    line: int
    reason: str
    row: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason} ({self.row})"


@dataclass
class Ratings:
    rows: list[dict] = field(default_factory=list)        # valid: case_id, statement_id, rating, reviewer
    problems: list[Problem] = field(default_factory=list)  # every row left out, with the reason


def read_filled(paths: Sequence[Path], known_cases: Optional[set[str]] = None) -> Ratings:
    """Read and validate filled questionnaires. A bad row is reported and left out; the rest still count.

    Bad: missing/unknown statement_id, empty or invalid rating, unknown case_id (when `known_cases` is
    given), and a second rating of the same (reviewer, case, statement)."""
    out = Ratings()
    seen: dict[tuple[str, str, str], str] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise QuestionnaireError(f"questionnaire file not found: '{path}'")
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"case_id", "statement_id", "rating"} - set(reader.fieldnames or ())
            if missing:
                raise QuestionnaireError(f"'{path}' lacks the column(s) {sorted(missing)}; "
                                         f"expected {', '.join(COLUMNS)}")
            for line, row in enumerate(reader, start=2):
                where = f"{path}:{line}"
                reason = _check_row(row, known_cases)
                reviewer = (row.get("reviewer") or "").strip() or path.stem
                key = (reviewer, (row["case_id"] or "").strip(), (row["statement_id"] or "").strip())
                if reason is None and key in seen:
                    reason = f"duplicate rating by '{reviewer}' (first at {seen[key]})"
                if reason is not None:
                    summary = ",".join(f"{k}={(row.get(k) or '').strip()}" for k in ("case_id", "statement_id", "rating"))
                    out.problems.append(Problem(str(path), line, reason, summary))
                    continue
                seen[key] = where
                out.rows.append({"case_id": key[1], "statement_id": key[2], "reviewer": reviewer,
                                 "rating": parse_rating(row["rating"])})
    return out


def _check_row(row: dict, known_cases: Optional[set[str]]) -> Optional[str]:
    case_id = (row.get("case_id") or "").strip()
    sid = (row.get("statement_id") or "").strip()
    rating = row.get("rating") or ""
    if not case_id:
        return "empty case_id"
    if known_cases is not None and case_id not in known_cases:
        return f"unknown case_id '{case_id}'"
    if sid not in STATEMENT_TEXT:
        return f"unknown statement_id '{sid}' (valid: {', '.join(STATEMENT_TEXT)})"
    if not rating.strip():
        return "not rated"
    if parse_rating(rating) is None:
        return f"invalid rating '{rating.strip()}' (use 5..1, {', '.join(RATINGS)}, or SA/A/N/D/SD)"
    return None


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """The Fig. 4a table: for each statement, n ratings and the percent of each rating, plus
    'agree_total' (strongly agree + agree, the figure the paper quotes) and the paper's value."""
    table = []
    for sid, text, paper in STATEMENTS:
        ratings = [r["rating"] for r in rows if r["statement_id"] == sid]
        entry = {"statement_id": sid, "statement": text, "n": len(ratings)}
        for rating in RATINGS:
            entry[_column(rating)] = pct(ratings.count(rating), len(ratings))
        entry["agree_total"] = pct(sum(r in RATINGS[:2] for r in ratings), len(ratings))
        entry["paper_agree_total"] = paper
        table.append(entry)
    return table


def table_columns() -> list[str]:
    return ["statement_id", "statement", "n", *map(_column, RATINGS), "agree_total", "paper_agree_total"]


def per_reviewer(rows: Sequence[dict]) -> list[dict]:
    out = []
    for reviewer in sorted({r["reviewer"] for r in rows}):
        mine = [r for r in rows if r["reviewer"] == reviewer]
        out.append({"reviewer": reviewer, "n": len(mine), "cases": len({r["case_id"] for r in mine}),
                    "agree_total": pct(sum(r["rating"] in RATINGS[:2] for r in mine), len(mine))})
    return out


def plot_stacked(table: Sequence[dict], path: Path) -> Path:
    """Horizontal stacked bars, one per statement, strongly agree on the left (as Fig. 4a)."""
    import matplotlib.pyplot as plt

    colors = ("#1a9641", "#a6d96a", "#d9d9d9", "#fdae61", "#d7191c")
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(table) + 1.5))
    labels = [f"{row['statement']} (n={row['n']})" for row in table]
    left = [0.0] * len(table)
    for rating, color in zip(RATINGS, colors):
        widths = [0.0 if row["n"] == 0 else row[_column(rating)] for row in table]
        ax.barh(labels, widths, left=left, color=color, label=rating, edgecolor="white")
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of ratings")
    ax.legend(ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.15 - 0.1 / max(len(table), 1)), fontsize=8)
    ax.set_title("Dermatologists' ratings per statement")
    return save_figure(fig, path)


def _column(rating: str) -> str:
    return rating.replace(" ", "_")
