"""Response-time statistics (the paper's Fig. 4b: seconds per answer, n=20, versus online dermatologists)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from skingpt4.evaluation.tables import save_figure


def latency_stats(seconds: Sequence[float]) -> dict:
    """n, median, quartiles (linear interpolation, numpy's default), IQR, mean, min, max, in seconds."""
    if not len(seconds):
        raise ValueError("no timings to summarise")
    x = np.asarray(seconds, dtype=float)
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {"n": int(x.size), "median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "mean": float(x.mean()), "min": float(x.min()), "max": float(x.max())}


def plot_latency(groups: Mapping[str, Sequence[float]], path: Path) -> Path:
    """One box (median, IQR, whiskers at 1.5 IQR) with the individual points, per group."""
    import matplotlib.pyplot as plt

    names = list(groups)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    ax.boxplot([list(groups[n]) for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [textwrap.fill(n, 14) for n in names], fontsize=8)
    for i, name in enumerate(names, start=1):
        values = list(groups[name])
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.scatter([i + j for j in jitter], values, s=10, color="#d73027", zorder=3)
    ax.set_ylabel("seconds")
    ax.set_title("Response time per answer")
    return save_figure(fig, path)
