"""Calibration of the differential (docs/evaluation.md, "Differential"): temperature scaling fitted on a validation
split, expected calibration error, Brier score, reliability diagram, and the coverage-accuracy curve of abstaining
below a confidence threshold, and the checks that refuse a fit that would mislead (`fit_problems`). The
calibration file is read and written by `skingpt4.chat.calibration_file`."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from skingpt4.common.config import ConfigError

ECE_BINS = 15
TEMPERATURE_BOUNDS = (1e-3, 1e3)   # the fit's search interval
BOUND_MARGIN = 0.01                # a T within 1% of a bound is "at the bound": the optimum lies outside
MIN_VALIDATION_CASES = 20


class CalibrationRefused(ConfigError):
    """A fit whose temperature would mislead: the message says why and what to do."""


def fit_problems(scores: torch.Tensor, labels: torch.Tensor, temperature: float,
                 bounds: tuple[float, float] = TEMPERATURE_BOUNDS, min_cases: int = MIN_VALIDATION_CASES) -> list[str]:
    """Why the fitted `temperature` cannot be trusted, or [] when it can:
    - too few validation cases for a stable fit;
    - perfect separation: every case's true class scores highest, so the NLL keeps falling as T -> 0 and the
      "optimum" is only the search bound (any image then gets ~100%, noise included);
    - the temperature within 1% of a search bound (the real optimum lies outside the interval)."""
    problems = []
    n = len(labels)
    if n < min_cases:
        problems.append(f"only {n} validation case(s); at least {min_cases} are needed for a stable temperature")
    if n and bool((scores.argmax(dim=-1) == labels).all()):
        problems.append(f"the validation split is perfectly separated (all {n} cases' true class scores highest), "
                        "so the likelihood has no finite optimum; use a larger or harder validation split")
    low, high = bounds
    if abs(math.log(temperature / low)) < math.log1p(BOUND_MARGIN) or \
            abs(math.log(high / temperature)) < math.log1p(BOUND_MARGIN):
        problems.append(f"the temperature {temperature:.4g} is at the search bound ({low:g}, {high:g}): the optimum "
                        "lies outside it")
    return problems


def nll(scores: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes under softmax(scores / T)."""
    logp = torch.log_softmax(scores.double() / temperature, dim=-1)
    return float(-logp[torch.arange(len(labels)), labels].mean())


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor, low: float = TEMPERATURE_BOUNDS[0],
                    high: float = TEMPERATURE_BOUNDS[1], steps: int = 200) -> float:
    """The T minimising the NLL of softmax(scores / T): golden-section search on log T (the NLL is unimodal in
    log T for temperature scaling), deterministic, no learning rate to tune."""
    if len(scores) == 0:
        raise ValueError("no validation cases to fit a temperature on")
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(scores, labels, math.exp(c)), nll(scores, labels, math.exp(d))
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(scores, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(scores, labels, math.exp(d))
    return math.exp((a + b) / 2)


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins over (0, 1]: count, mean confidence and accuracy of the top-1 predictions."""
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).double()
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi)
        n = int(inside.sum())
        rows.append({"bin": b, "low": lo, "high": hi, "n": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return rows


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of (n_bin / N) * |accuracy_bin - confidence_bin|, equal-width bins of the top-1 confidence."""
    total = len(labels)
    return sum(r["n"] / total * abs(r["accuracy"] - r["confidence"]) for r in reliability_bins(probs, labels, bins)
               if r["n"])


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over cases of the squared distance between the probability vector and the one-hot true class."""
    onehot = torch.nn.functional.one_hot(labels, probs.shape[-1]).double()
    return float(((probs.double() - onehot) ** 2).sum(-1).mean())


def top_k_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = probs.topk(min(k, probs.shape[-1]), dim=-1).indices
    return float((top == labels[:, None]).any(-1).double().mean())


def coverage_accuracy(probs: torch.Tensor, labels: torch.Tensor,
                      thresholds: Sequence[float] = tuple(i / 20 for i in range(20))) -> list[dict]:
    """For each threshold: the share of cases answered (top probability >= threshold; the rest abstain) and the
    top-1 accuracy on those answered."""
    confidence, predicted = probs.max(dim=-1)
    correct = predicted == labels
    rows = []
    for t in thresholds:
        answered = confidence >= t
        n = int(answered.sum())
        rows.append({"threshold": t, "coverage": n / len(labels),
                     "accuracy": float(correct[answered].double().mean()) if n else None})
    return rows


def calibration_summary(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"n": len(labels), "top1": top_k_accuracy(probs, labels, 1), "top3": top_k_accuracy(probs, labels, 3),
            "ece": expected_calibration_error(probs, labels), "brier": brier_score(probs, labels)}


def ece_of_bins(rows: list[dict]) -> float:
    """The ECE of `reliability_bins` rows (the same figure as `expected_calibration_error`)."""
    total = sum(r["n"] for r in rows)
    return sum(r["n"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]) if total else 0.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(curves: dict[str, list[dict]], path: Path) -> Path:
    """A reliability diagram: accuracy against confidence per bin, a curve per name with its ECE in the legend,
    and below it the number of cases in each bin (a point on few cases says little)."""
    plt = _pyplot()
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5.2, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    width = 1 / max(len(rows) for rows in curves.values()) / max(len(curves), 1) if curves else 0.05
    for k, (name, rows) in enumerate(curves.items()):
        used = [r for r in rows if r["n"]]
        line, = ax.plot([r["confidence"] for r in used], [r["accuracy"] for r in used], marker="o",
                        label=f"{name}: ECE {ece_of_bins(rows):.3f}")
        lefts = [r["low"] + k * width for r in rows]
        bars = counts.bar(lefts, [r["n"] for r in rows], width=width, align="edge", color=line.get_color(),
                          alpha=0.7, label=name)
        for bar, r in zip(bars, rows):
            if r["n"]:
                counts.text(bar.get_x() + width / 2, bar.get_height(), str(r["n"]), ha="center", va="bottom",
                            fontsize=6)
    bins = len(next(iter(curves.values()))) if curves else ECE_BINS
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title=f"Reliability ({bins} equal-width bins)")
    ax.legend(loc="upper left", fontsize=7)
    counts.set(xlabel="confidence (top-1 probability)", ylabel="cases per bin")
    counts.margins(y=0.25)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path


def point_at(rows: list[dict], threshold: float) -> dict:
    """The coverage-accuracy row whose threshold is nearest `threshold`."""
    return min(rows, key=lambda r: abs(r["threshold"] - threshold))


def plot_coverage(curves: dict[str, list[dict]], path: Path, threshold: float | None = None) -> Path:
    """Accuracy on the cases answered against the share answered, one point per threshold; the configured
    abstention `threshold` is marked on each curve with its coverage and accuracy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.3))
    for name, rows in curves.items():
        used = [r for r in rows if r["accuracy"] is not None]
        line, = ax.plot([r["coverage"] for r in used], [r["accuracy"] for r in used], marker=".", label=name)
        if threshold is not None and used:
            at = point_at(used, threshold)
            ax.scatter([at["coverage"]], [at["accuracy"]], s=120, marker="*", color=line.get_color(), zorder=3,
                       edgecolor="black", label=f"abstain below {threshold:g}: coverage {at['coverage']:.0%}, "
                                                f"accuracy {at['accuracy']:.0%}")
            ax.axvline(at["coverage"], color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set(xlabel="coverage (share of cases answered)", ylabel="accuracy on answered cases", xlim=(0, 1.02),
           ylim=(0, 1.05), title="Abstention: coverage vs accuracy")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path
