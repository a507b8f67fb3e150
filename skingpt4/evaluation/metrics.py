"""Automatic diagnosis metrics on a labelled set (beyond the paper), stratified by skin type, and concept
recall on SKINCON-labelled images.

Conventions (stated because libraries differ):
- Predictions may be "unknown" (no class named); an unknown prediction counts as wrong.
- Precision of a class never predicted, or recall of a class absent from the ground truth, is 0.0 (as
  scikit-learn's zero_division=0); macro averages run over the classes present in the ground truth.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from skingpt4.evaluation.extract import UNKNOWN
from skingpt4.evaluation.tables import ratio, save_figure


def diagnosis_metrics(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels for {len(y_pred)} predictions")
    outside = sorted(set(y_true) - set(classes))
    if outside:
        raise ValueError(f"ground-truth labels {outside} are not among the classes {list(classes)}")
    pairs = Counter(zip(y_true, y_pred))
    truth, predicted = Counter(y_true), Counter(y_pred)
    per_class = []
    for c in classes:
        if not truth[c] and not predicted[c]:
            continue
        tp = pairs[(c, c)]
        precision = tp / predicted[c] if predicted[c] else 0.0
        recall = tp / truth[c] if truth[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"class": c, "support": truth[c], "predicted": predicted[c], "precision": precision,
                          "recall": recall, "f1": f1})
    present = [row for row in per_class if row["support"]]
    columns = list(classes) + [UNKNOWN]
    return {
        "n": len(y_true),
        "accuracy": ratio(sum(pairs[(c, c)] for c in classes), len(y_true)),
        "unknown_rate": ratio(predicted[UNKNOWN], len(y_pred)),
        "macro_precision": ratio(sum(r["precision"] for r in present), len(present)),
        "macro_recall": ratio(sum(r["recall"] for r in present), len(present)),
        "macro_f1": ratio(sum(r["f1"] for r in present), len(present)),
        "per_class": per_class,
        "confusion": {"rows": list(classes), "columns": columns,
                      "counts": [[pairs[(t, p)] for p in columns] for t in classes]},
    }


def stratified(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence[Optional[str]],
               classes: Sequence[str]) -> list[dict]:
    """The summary metrics per group (e.g. Fitzpatrick skin type); cases without a group are left out."""
    out = []
    for group in sorted({g for g in groups if g not in (None, "")}, key=str):
        idx = [i for i, g in enumerate(groups) if g == group]
        m = diagnosis_metrics([y_true[i] for i in idx], [y_pred[i] for i in idx], classes)
        out.append({"group": group, **{k: m[k] for k in ("n", "accuracy", "unknown_rate", "macro_f1")}})
    return out


# The two skin-tone scales of the SKINCON sources: Fitzpatrick17k's types I..VI and DDI's three bands.
FITZPATRICK_TYPES = ("I", "II", "III", "IV", "V", "VI")
DDI_BANDS = ("I-II", "III-IV", "V-VI")
SKIN_SCALES = {"fitzpatrick": "Fitzpatrick skin type (I-VI)", "ddi": "DDI skin-tone band (I-II / III-IV / V-VI)",
               "other": "other skin-type groups"}


def skin_scale(group: str) -> str:
    """'fitzpatrick' for I..VI, 'ddi' for the bands I-II, III-IV, V-VI, else 'other'."""
    text = str(group).strip().upper().replace("\u2013", "-").replace(" ", "")
    if text in FITZPATRICK_TYPES:
        return "fitzpatrick"
    return "ddi" if text in DDI_BANDS else "other"


def stratified_by_scale(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence[Optional[str]],
                        classes: Sequence[str]) -> dict[str, list[dict]]:
    """`stratified` per skin-tone scale, so Fitzpatrick types and DDI bands are never mixed in one table:
    {'fitzpatrick': [...], 'ddi': [...], 'other': [...]} (only the scales present), groups in scale order."""
    order = {g: i for i, g in enumerate(FITZPATRICK_TYPES + DDI_BANDS)}
    out: dict[str, list[dict]] = {}
    for row in stratified(y_true, y_pred, groups, classes):
        out.setdefault(skin_scale(row["group"]), []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: (order.get(str(r["group"]).strip().upper(), len(order)), str(r["group"])))
    return {scale: out[scale] for scale in SKIN_SCALES if scale in out}


def concept_recall(true_concepts: Sequence[Sequence[str]], mentioned: Sequence[Sequence[str]]) -> dict:
    """Share of each image's true SKINCON concepts that its description mentions.

    micro: all (image, true concept) pairs pooled; macro: mean over images that have any true concept;
    per_concept: recall of each concept over the images that carry it."""
    if len(true_concepts) != len(mentioned):
        raise ValueError(f"{len(true_concepts)} concept sets for {len(mentioned)} descriptions")
    hits = total = 0
    image_recalls = []
    carried, found = Counter(), Counter()
    for truth, said in zip(true_concepts, mentioned):
        truth, said = set(truth), set(said)
        if not truth:
            continue
        hit = len(truth & said)
        hits, total = hits + hit, total + len(truth)
        image_recalls.append(hit / len(truth))
        carried.update(truth)
        found.update(truth & said)
    return {
        "images": len(image_recalls),
        "micro_recall": ratio(hits, total),
        "macro_recall": ratio(sum(image_recalls), len(image_recalls)),
        "per_concept": [{"concept": c, "images": carried[c], "recall": found[c] / carried[c]} for c in sorted(carried)],
    }


def plot_confusion(confusion: dict, path: Path, title: str = "Confusion matrix") -> Path:
    import matplotlib.pyplot as plt

    counts = confusion["counts"]
    rows, columns = confusion["rows"], confusion["columns"]
    fig, ax = plt.subplots(figsize=(0.5 * len(columns) + 4, 0.45 * len(rows) + 3))
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.03)
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("predicted (extracted from the answer)")
    ax.set_ylabel("true class")
    peak = max((max(r) for r in counts), default=0)
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > peak / 2 else "black")
    ax.set_title(title)
    return save_figure(fig, path)
