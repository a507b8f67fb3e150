"""Training metrics on rank 0: one JSON record per logged step in `metrics.jsonl`, TensorBoard scalars when the
tensorboard package is installed, and a loss-curve PNG at the end."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

log = logging.getLogger("skingpt4.train")


class MetricsLog:
    def __init__(self, output_dir: Path, resume_step: int, tensorboard: bool, drop_partial: bool = False):
        self.path = output_dir / "metrics.jsonl"
        self._truncate_after(resume_step, drop_partial)
        self.writer = _tensorboard_writer(output_dir / "tensorboard") if tensorboard else None

    def _truncate_after(self, step: int, drop_partial: bool) -> None:
        """Drop records a killed run logged after its last checkpoint, so a resumed run's log has no repeats;
        with `drop_partial`, also the partial record a stop wrote at `step` (the resumed run's next record
        covers its steps, as an uninterrupted run's does)."""
        if not self.path.exists():
            return
        lines, records = _parse_lines(self.path)
        kept = [line for line, r in zip(lines, records)
                if r["step"] < step or (r["step"] == step and not (drop_partial and r.get("partial")))]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the optional tensorboard package
        log.info("run.tensorboard: the tensorboard package is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(directory))


def _parse_lines(path: Path) -> tuple[list[str], list[dict]]:
    """The records of metrics.jsonl with their lines. A line that is not a whole record (a run killed while
    appending tears the last one) is dropped with a warning: the log is the checkpointed run's, so nothing is lost
    that the resumed run does not write again."""
    lines, records, torn = [], [], []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            torn.append(number)
            continue
        lines.append(line)
        records.append(record)
    if torn:
        log.warning("%s: dropped %d line(s) that are not whole records (line %s): a run killed while writing",
                    path, len(torn), ", ".join(map(str, torn[:5])))
    return lines, records


def read_metrics(path: Path) -> list[dict]:
    return _parse_lines(path)[1]


def plot_loss_curve(metrics_path: Path, png_path: Path, title: str = "training loss") -> Optional[Path]:
    """Loss (and LR) against step, from metrics.jsonl. Returns None when there is nothing to plot."""
    records = [r for r in read_metrics(metrics_path) if "loss" in r] if Path(metrics_path).exists() else []
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(steps, [r["loss"] for r in records], color="tab:blue", label="loss")
    loss_ax.set_xlabel("optimisation step")
    loss_ax.set_ylabel("loss", color="tab:blue")
    lr_ax = loss_ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in records], color="tab:orange", alpha=0.6, label="lr")
    lr_ax.set_ylabel("learning rate", color="tab:orange")
    loss_ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
