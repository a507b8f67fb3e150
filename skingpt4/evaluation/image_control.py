"""Image-reliance control (`evaluate.py --task image_control`): does the diagnosis come from the image?

The labelled cases are asked the diagnosis question (`evaluation.metrics.question`) four times, each time
with another image in the case's place:
  original  the case's own image
  blank     one uniform mid-grey image for every case
  noise     uniform random RGB noise, a different (seeded) image per case
  shuffled  the image of another case, of another class where the case list has one (a fixed derangement)
A model that reads the image is accurate on `original`, near chance on `blank` and `noise`, and on `shuffled`
names the class of the image it was shown (`follows_donor`) rather than the case's. A model that gives the
same accuracy without the image ignores it: a defect this task exists to expose. Per condition: accuracy,
macro-F1, unknown rate, the share of answers that differ from the original answer, and (shuffled) the share
that name the donor's class. Chance is 1 / the number of classes among the cases.

The control images are written under `<out>/control_images/` (they are synthetic; no patient image is copied).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from skingpt4.common.config import ConfigError
from skingpt4.evaluation import metrics as met
from skingpt4.evaluation.cases import Case
from skingpt4.evaluation.records import record_filename
from skingpt4.evaluation.tables import finish_task, format_table, none_if_nan, ratio, save_figure, write_csv

CONDITIONS = ("original", "blank", "noise", "shuffled")
CONTROL_SIZE = 224
COLUMNS = ["condition", "n", "accuracy", "macro_f1", "unknown_rate", "answers_changed", "follows_donor"]


def donors(cases: list[Case], seed: int) -> list[int]:
    """For each case the index of another case whose image it is shown: a seeded derangement that picks a
    case of another class whenever the list has one."""
    if len(cases) < 2:
        raise ConfigError("the image_control task needs at least 2 cases (the shuffled condition swaps images)")
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    position = {case: p for p, case in enumerate(order)}
    out = []
    for i, case in enumerate(cases):
        start = position[i] + len(cases) // 2
        candidates = [order[(start + k) % len(cases)] for k in range(len(cases))]
        candidates = [j for j in candidates if j != i]
        other_class = [j for j in candidates if cases[j].label != case.label]
        out.append((other_class or candidates)[0])
    return out


def control_cases(cases: list[Case], folder: Path, seed: int) -> tuple[dict[str, list[Case]], list[int]]:
    """The cases of every condition (same ids and labels, other images) and the donor of each case."""
    folder.mkdir(parents=True, exist_ok=True)
    blank = folder / "blank.png"
    Image.new("RGB", (CONTROL_SIZE, CONTROL_SIZE), (128, 128, 128)).save(blank)
    (folder / "noise").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    noise = []
    for case in cases:
        path = folder / "noise" / (record_filename(case.case_id)[:-len(".json")] + ".png")
        Image.fromarray(rng.integers(0, 256, (CONTROL_SIZE, CONTROL_SIZE, 3), dtype=np.uint8)).save(path)
        noise.append(path)
    donor = donors(cases, seed)
    with_image = lambda case, image: Case(case.case_id, Path(image), case.label, case.skin_type, case.concepts)  # noqa: E731
    return {"original": list(cases),
            "blank": [with_image(c, blank) for c in cases],
            "noise": [with_image(c, p) for c, p in zip(cases, noise)],
            "shuffled": [with_image(c, cases[d].image) for c, d in zip(cases, donor)]}, donor


def image_control(ctx, out: Optional[Path] = None) -> dict:
    out = out or ctx.out
    cases, problems = ctx.cases()
    cases = [c for c in cases if c.label is not None]
    if not cases:
        raise ConfigError(f"evaluation.cases '{ctx.ev.cases}' has no class labels: the image_control task compares "
                          "diagnoses with the cases' labels (see docs/evaluation.md, 'Cases')")
    conditions, donor = control_cases(cases, out / "control_images", ctx.ev.seed)
    summary = {"task": "image_control", "question": ctx.ev.metrics.question,
               "chance": 1 / len({c.label for c in cases}), **ctx.fingerprint()}
    answers: dict[str, dict[str, tuple[str, str]]] = {}   # condition -> case id -> (answer, predicted)
    rows, table = [], []
    for condition, shown in conditions.items():
        sessions, failed = ctx.sessions(shown, [ctx.ev.metrics.question])
        problems += [{**p, "condition": condition} for p in failed]
        answers[condition] = {}
        for s in sessions:
            text = s.answers[0]["answer"]
            answers[condition][s.case.case_id] = (text, ctx.extractor.extract(text).label)
        table.append({"condition": condition, **_scores(ctx, cases, donor, answers, condition)})
    for i, case in enumerate(cases):
        for condition, shown in conditions.items():
            if case.case_id in answers[condition]:
                text, predicted = answers[condition][case.case_id]
                rows.append({"case_id": case.case_id, "label": case.label, "condition": condition,
                             "image": str(shown[i].image), "image_label": cases[donor[i]].label
                             if condition == "shuffled" else case.label if condition == "original" else "",
                             "predicted": predicted, "answer": text})
    write_csv(out / "predictions.csv", rows, ["case_id", "label", "condition", "image", "image_label", "predicted",
                                              "answer"])
    write_csv(out / "image_control.csv", table, COLUMNS)
    plot(table, summary["chance"], out / "image_control.png")
    print(format_table([{k: ("" if v is None else round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                        for r in table], COLUMNS))
    summary["conditions"] = {r["condition"]: {k: v for k, v in r.items() if k != "condition"} for r in table}
    return finish_task(out, summary, problems)


def _scores(ctx, cases: list[Case], donor: list[int], answers: dict, condition: str) -> dict:
    done = [(i, c) for i, c in enumerate(cases) if c.case_id in answers[condition]]
    if not done:
        return {"n": 0, "accuracy": None, "macro_f1": None, "unknown_rate": None, "answers_changed": None,
                "follows_donor": None}
    predicted = [answers[condition][c.case_id][1] for _, c in done]
    result = met.diagnosis_metrics([c.label for _, c in done], predicted, ctx.extractor.classes)
    both = [c.case_id for _, c in done if c.case_id in answers["original"]]
    changed = sum(answers[condition][cid][0].strip() != answers["original"][cid][0].strip() for cid in both)
    follows = None
    if condition == "shuffled":
        follows = ratio(sum(p == cases[donor[i]].label for (i, _), p in zip(done, predicted)), len(done))
    return {"n": len(done), "accuracy": none_if_nan(result["accuracy"]), "macro_f1": none_if_nan(result["macro_f1"]),
            "unknown_rate": none_if_nan(result["unknown_rate"]),
            "answers_changed": none_if_nan(ratio(changed, len(both))), "follows_donor": none_if_nan(follows)}


def plot(table: list[dict], chance: float, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = [r["condition"] for r in table]
    ax.bar(names, [100 * (r["accuracy"] or 0) for r in table], color=["#1a9850", "#bdbdbd", "#969696", "#d73027"])
    ax.axhline(100 * chance, color="black", linestyle="--", label=f"chance {100 * chance:.1f}%")
    for x, r in enumerate(table):
        if r["unknown_rate"]:
            ax.text(x, 2, f"unknown {100 * r['unknown_rate']:.0f}%", ha="center", fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("diagnosis accuracy (%)")
    ax.set_title("Image-reliance control: the same cases with other images")
    ax.legend(loc="upper right")
    return save_figure(fig, path)
