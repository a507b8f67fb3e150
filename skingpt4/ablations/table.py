"""The ablation table: per arm, mean ± std over seeds and a 95% bootstrap interval over cases; the ordering checks;
markdown, JSON and one plot."""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

BOOTSTRAP = 2000
# The ordering the two-step recipe should show: each arm above the next, by more than the seeds' spread.
ORDER = ("both_steps", "step2_only", "step1_only", "untrained")


def bootstrap_interval(correct: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the accuracy averaged over seeds, resampling cases (the same resample for every
    seed). `correct`: [seeds, cases] booleans, the cases in one order."""
    rng = np.random.default_rng(seed)
    n = correct.shape[1]
    picks = rng.integers(0, n, (resamples, n))
    stats = correct[:, picks].mean(axis=(0, 2))
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _mean_std(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    kept = [v for v in values if v is not None]
    if not kept:
        return None, None
    return float(np.mean(kept)), float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0


def temperature_range() -> tuple[float, float]:
    """The search range of the differential's temperature fit (skingpt4.evaluation.calibration)."""
    from skingpt4.evaluation.calibration import fit_temperature

    params = inspect.signature(fit_temperature).parameters
    return float(params["low"].default), float(params["high"].default)


def summarise(results: dict[str, dict[int, dict]], arms: dict, baselines: Optional[dict]) -> dict:
    """results[arm][seed] -> the table's rows and checks."""
    low, high = temperature_range()
    rows = []
    for name, by_seed in results.items():
        seeds = sorted(by_seed)
        if not seeds:
            continue
        first = by_seed[seeds[0]]["cases"]
        aligned = all(by_seed[s]["cases"] == first for s in seeds)
        correct = np.array([by_seed[s]["correct"] for s in seeds], dtype=float) if aligned else None
        differential = np.array([by_seed[s]["differential_correct"] for s in seeds], dtype=float) if aligned else None
        accuracy = [by_seed[s]["diagnosis"]["accuracy"] for s in seeds]
        calib = [by_seed[s].get("calibration") or {} for s in seeds]
        fitted = [c for c in calib if "temperature" in c]
        row = {"arm": name, "what": arms[name].what, "seeds": seeds, "n_cases": len(first),
               "accuracy_by_seed": accuracy}
        row["accuracy_mean"], row["accuracy_std"] = _mean_std(accuracy)
        row["accuracy_ci95"] = bootstrap_interval(correct) if correct is not None else None
        row["differential_top1_mean"], row["differential_top1_std"] = _mean_std(
            [float(np.mean(by_seed[s]["differential_correct"])) for s in seeds])
        row["differential_top1_ci95"] = bootstrap_interval(differential) if differential is not None else None
        row["macro_f1_mean"], _ = _mean_std([by_seed[s]["diagnosis"]["macro_f1"] for s in seeds])
        row["concept_recall_mean"], row["concept_recall_std"] = _mean_std(
            [by_seed[s].get("concept_recall") for s in seeds])
        if fitted:
            row["temperature_by_seed"] = [c["temperature"] for c in fitted]
            row["temperature_inside_range"] = all(low * 1.05 < c["temperature"] < high / 1.05 for c in fitted)
            for key in ("test_ece_before", "test_ece_after", "validation_ece_before", "validation_ece_after",
                        "test_brier_before", "test_brier_after"):
                row[key], _ = _mean_std([c[key] for c in fitted])
            row["test_ece_by_seed"] = [[c["test_ece_before"], c["test_ece_after"]] for c in fitted]
            row["ece_improves"] = row["test_ece_after"] < row["test_ece_before"]  # mean over seeds
        row["calibration_refused"] = [c["refused"] for c in calib if "refused" in c]
        rows.append(row)
    by_arm = {r["arm"]: r for r in rows}
    checks = []
    present = [a for a in ORDER if a in by_arm]
    for upper, lower in zip(present, present[1:]):
        a, b = by_arm[upper], by_arm[lower]
        gap, spread = a["accuracy_mean"] - b["accuracy_mean"], max(a["accuracy_std"], b["accuracy_std"])
        checks.append({"check": f"{upper} > {lower} by more than the seeds' spread", "ok": gap > spread,
                       "detail": f"gap {gap:+.1%}, spread (larger std) {spread:.1%}"})
    if baselines and "both_steps" in by_arm:
        best = max(baselines["rgb_histogram_logreg"], baselines["hue_histogram_1nn"])
        checks.append({"check": "trivial pixel baselines <= 60%", "ok": best <= 0.6, "detail": f"best {best:.1%}"})
        lo = by_arm["both_steps"]["accuracy_ci95"]
        checks.append({"check": "both steps clearly above the best pixel baseline (95% interval above it)",
                       "ok": lo is not None and lo[0] > best, "detail": f"interval {_interval(lo)} vs {best:.1%}"})
    if "both_steps" in by_arm and "temperature_by_seed" in by_arm["both_steps"]:
        r = by_arm["both_steps"]
        checks.append({"check": "both steps: fitted temperature inside its search range",
                       "ok": r["temperature_inside_range"],
                       "detail": f"T {', '.join(f'{t:.3g}' for t in r['temperature_by_seed'])} in ({low:g}, {high:g})"})
        checks.append({"check": "both steps: held-out ECE lower after calibration (mean over seeds)",
                       "ok": r["ece_improves"],
                       "detail": f"{r['test_ece_before']:.3f} -> {r['test_ece_after']:.3f}; per seed "
                                 + ", ".join(f"{b:.3f} -> {a:.3f}" for b, a in r["test_ece_by_seed"])
                                 + f"; validation {r['validation_ece_before']:.3f} -> {r['validation_ece_after']:.3f};"
                                 f" held-out Brier {r['test_brier_before']:.3f} -> {r['test_brier_after']:.3f}"})
    return {"rows": rows, "checks": checks, "baselines": baselines, "temperature_range": [low, high],
            "bootstrap_resamples": BOOTSTRAP}


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _interval(ci) -> str:
    return "n/a" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def markdown(table: dict) -> str:
    lines = ["| arm | accuracy (mean ± std over seeds) | 95% CI (bootstrap over cases) | differential top-1 | "
             "concept recall | T (fitted) | held-out ECE before → after | Brier before → after |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        std = "" if r["accuracy_std"] is None else f" ± {100 * r['accuracy_std']:.1f}"
        temps = ", ".join(f"{t:.3g}" for t in r.get("temperature_by_seed", [])) or "n/a"
        ece = (f"{r['test_ece_before']:.3f} → {r['test_ece_after']:.3f}" if "test_ece_before" in r else "n/a")
        brier = (f"{r['test_brier_before']:.3f} → {r['test_brier_after']:.3f}" if "test_brier_before" in r else "n/a")
        if r["calibration_refused"]:
            temps = f"refused ({len(r['calibration_refused'])} seed(s))" if temps == "n/a" else temps
        lines.append(f"| `{r['arm']}` ({len(r['seeds'])} seeds, {r['n_cases']} cases) | {_pct(r['accuracy_mean'])}{std} "
                     f"| {_interval(r['accuracy_ci95'])} | {_pct(r['differential_top1_mean'])} "
                     f"| {_pct(r['concept_recall_mean'])} | {temps} | {ece} | {brier} |")
    b = table.get("baselines")
    if b:
        lines += ["", f"Trivial pixel baselines on the same held-out split ({b['n_test']} cases, fitted on "
                      f"{b['n_train']} training images): RGB-histogram logistic regression "
                      f"{_pct(b['rgb_histogram_logreg'])}, hue-histogram 1-NN {_pct(b['hue_histogram_1nn'])}; "
                      f"chance {_pct(b['chance'])}."]
    lines += ["", "Checks:"] + [f"- [{'ok' if c['ok'] else 'FAILED'}] {c['check']}: {c['detail']}"
                                for c in table["checks"]]
    return "\n".join(lines) + "\n"


def plot(table: dict, path: Path) -> Path:
    """Accuracy per arm: the mean with its bootstrap interval, each seed a dot, the baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rows) + 2), 4.2))
    x = np.arange(len(rows))
    means = [r["accuracy_mean"] or 0 for r in rows]
    low = [m - (r["accuracy_ci95"] or (m, m))[0] for m, r in zip(means, rows)]
    high = [(r["accuracy_ci95"] or (m, m))[1] - m for m, r in zip(means, rows)]
    ax.bar(x, means, color="#7a9cc6", yerr=[low, high], capsize=4, label="mean over seeds (95% CI over cases)")
    for i, r in enumerate(rows):
        seeds = [a for a in r["accuracy_by_seed"] if a is not None]
        ax.scatter([i] * len(seeds), seeds, color="black", s=12, zorder=3)
    b = table.get("baselines")
    if b:
        ax.axhline(b["rgb_histogram_logreg"], color="#c0504d", linestyle="--", label="RGB-histogram logistic regression")
        ax.axhline(b["hue_histogram_1nn"], color="#9bbb59", linestyle=":", label="hue-histogram 1-NN")
        ax.axhline(b["chance"], color="grey", linestyle="-.", label="chance")
    ax.set_xticks(x, [r["arm"].replace("_", "\n") for r in rows], fontsize=8)
    ax.set(ylabel="held-out diagnosis accuracy", ylim=(0, 1), title="Ablations in the tiny world")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
