"""Calibration of the differential (docs/evaluation.md, "Differential"): temperature scaling fitted on a validation
split, expected calibration error, Brier score, reliability diagram, and the coverage-accuracy curve of abstaining
below a confidence threshold. The fitted temperature's file is read and written by `skingpt4.chat.differential`."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch


ECE_BINS = 15


def nll(scores: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes under softmax(scores / T)."""
    logp = torch.log_softmax(scores.double() / temperature, dim=-1)
    return float(-logp[torch.arange(len(labels)), labels].mean())


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor, low: float = 1e-3, high: float = 1e3,
                    steps: int = 200) -> float:
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


def plot_reliability(curves: dict[str, list[dict]], path: Path) -> Path:
    """One reliability diagram (accuracy against confidence per bin) with a curve per name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, rows in curves.items():
        used = [r for r in rows if r["n"]]
        ax.plot([r["confidence"] for r in used], [r["accuracy"] for r in used], marker="o", label=name)
    ax.set(xlabel="confidence (top-1 probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability ({ECE_BINS} bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_coverage(curves: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    for name, rows in curves.items():
        used = [r for r in rows if r["accuracy"] is not None]
        ax.plot([r["coverage"] for r in used], [r["accuracy"] for r in used], marker=".", label=name)
    ax.set(xlabel="coverage (share of cases answered)", ylabel="accuracy on answered cases", xlim=(0, 1.02),
           ylim=(0, 1.02), title="Abstention: coverage vs accuracy")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
