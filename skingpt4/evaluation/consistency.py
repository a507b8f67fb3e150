"""Consistency of the diagnosis over repeated runs (the paper's Fig. 4c: 45 cases x 10 runs, 93.73%).

For each case, the class extracted from each run's answer is compared with the case's majority class;
the consistency ratio is the share of all runs that agree with their case's majority
(sum over cases of majority count / total runs, which equals the mean per-case ratio when every case
has the same number of runs). "unknown" is a label like any other, so a case where every run names no
class is 100% consistent: the unknown rate is reported beside the ratio for that reason. The share of
runs whose answer *text* equals the case's most frequent text is reported too (greedy decoding should
give 100% on both).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from skingpt4.evaluation.extract import UNKNOWN
from skingpt4.evaluation.tables import ratio, save_figure, short_labels, write_csv


def majority(labels: Sequence[str]) -> tuple[str, int]:
    """Most frequent label and its count; a tie goes to the label that appeared first."""
    if not labels:
        raise ValueError("majority() of no runs")
    counts = Counter(labels)
    best = max(counts.values())
    return next(label for label in labels if counts[label] == best), best


@dataclass
class CaseConsistency:
    case_id: str
    runs: int
    majority: str
    agree: int
    ratio: float
    unknown: int
    same_text: float  # share of runs whose answer text equals the case's most frequent answer text
    labels: list[str]


def case_consistency(case_id: str, labels: Sequence[str], answers: Sequence[str]) -> CaseConsistency:
    if len(labels) != len(answers):
        raise ValueError(f"case '{case_id}': {len(labels)} labels for {len(answers)} answers")
    label, agree = majority(labels)
    _, same = majority([a.strip() for a in answers])
    return CaseConsistency(case_id, len(labels), label, agree, agree / len(labels), labels.count(UNKNOWN),
                           same / len(answers), list(labels))


def summarize(cases: Sequence[CaseConsistency]) -> dict:
    runs = sum(c.runs for c in cases)
    return {
        "cases": len(cases),
        "runs": runs,
        "consistency_ratio": ratio(sum(c.agree for c in cases), runs),
        "mean_case_ratio": ratio(sum(c.ratio for c in cases), len(cases)),
        "unknown_rate": ratio(sum(c.unknown for c in cases), runs),
        "same_text_ratio": ratio(sum(c.same_text * c.runs for c in cases), runs),
    }


def from_answers(answers: Mapping[str, Sequence[str]], extract) -> list[CaseConsistency]:
    """{case_id: [answer of run 1, ..., run K]} -> per-case consistency, `extract(text) -> class`."""
    return [case_consistency(cid, [extract(a) for a in runs], runs) for cid, runs in answers.items()]


def write(cases: Sequence[CaseConsistency], out_dir: Path) -> dict[str, Path]:
    rows = [{**{k: v for k, v in asdict(c).items() if k != "labels"}, "labels": "|".join(c.labels)} for c in cases]
    csv_path = write_csv(out_dir / "consistency_per_case.csv", rows,
                         ["case_id", "runs", "majority", "agree", "ratio", "unknown", "same_text", "labels"])
    return {"per_case_csv": csv_path, "plot": plot(cases, summarize(cases), out_dir / "consistency.png")}


def plot(cases: Sequence[CaseConsistency], summary: dict, path: Path) -> Path:
    """Per case: the runs agreeing with the majority, split into a named class (blue) and "unknown" (grey), so
    that agreement on naming nothing can never pass for a consistent diagnosis."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(cases) + 2), 4))
    x = range(len(cases))
    named = [100 * c.ratio if c.majority != UNKNOWN else 0.0 for c in cases]
    unknown = [100 * c.ratio if c.majority == UNKNOWN else 0.0 for c in cases]
    ax.bar(x, named, color="#4575b4", label="agree on a class")
    ax.bar(x, unknown, bottom=named, color="#bdbdbd", hatch="//", label="agree on unknown (no class named)")
    ax.axhline(100 * summary["consistency_ratio"], color="#d73027", linestyle="--",
               label=f"overall {100 * summary['consistency_ratio']:.2f}%")
    # long case ids (a Dermnet folder and file name) would squeeze the bars: at most 24 characters each; the
    # full ids are in consistency_per_case.csv
    ax.set_xticks(list(x), short_labels([c.case_id for c in cases]), rotation=90, fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("runs agreeing with majority (%)")
    ax.set_title(f"Diagnosis consistency over {summary['runs']} runs of {summary['cases']} cases "
                 f"(unknown rate {100 * summary['unknown_rate']:.1f}%)")
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)
