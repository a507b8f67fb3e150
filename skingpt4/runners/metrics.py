"""Training metrics on rank 0: one JSON record per logged step in `metrics.jsonl` (and one per validation, with
`val_loss`), TensorBoard scalars with run.tensorboard, and the loss curve -- `loss_curve.json` rewritten at every
record, `loss_curve.png` redrawn at least every `PNG_EVERY_S` seconds, after each validation and at the end -- so a
running job can be watched from its files."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("skingpt4.train")
PNG_EVERY_S = 60.0  # drawing the PNG takes ~0.1-0.3 s: not at every record of a long run


class MetricsLog:
    def __init__(self, output_dir: Path, resume_step: int, tensorboard: bool, drop_partial: bool = False):
        self.path = output_dir / "metrics.jsonl"
        self.curve_json, self.curve_png = output_dir / "loss_curve.json", output_dir / "loss_curve.png"
        self._truncate_after(resume_step, drop_partial)
        self.records = read_metrics(self.path) if self.path.exists() else []
        self._png_drawn_at = -math.inf
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

    def write(self, record: dict, group: str = "train") -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.records.append(record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{group}/{key}", value, record["step"])

    def update_curve(self, draw_png: bool = False) -> Optional[Path]:
        """Rewrite loss_curve.json (atomically) from the records so far; redraw the PNG when asked or when the
        last drawing is older than PNG_EVERY_S. Returns the PNG's path once one exists."""
        curve = loss_curve_data(self.records)
        tmp = self.curve_json.with_name(self.curve_json.name + ".tmp")
        tmp.write_text(json.dumps(curve, allow_nan=True) + "\n")
        os.replace(tmp, self.curve_json)
        if draw_png or time.monotonic() - self._png_drawn_at >= PNG_EVERY_S:
            if draw_loss_curve(curve, self.curve_png) is not None:
                self._png_drawn_at = time.monotonic()
        return self.curve_png if self.curve_png.exists() else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


TENSORBOARD_MISSING = ("run.tensorboard=true needs the tensorboard package, which is optional: install it with "
                       "pip install 'skingpt4[tensorboard]' (or pip install tensorboard), or set run.tensorboard=false "
                       "(metrics.jsonl and loss_curve.png/json are written either way)")


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # checked before training starts (recipe.py); a broken install still must not stop a run
        log.warning(TENSORBOARD_MISSING)
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


def loss_curve_data(records: list[dict]) -> dict:
    """metrics records -> {"train": [{step, loss, lr}], "validation": [{step, epoch, val_loss, ...}]}."""
    train = [{"step": r["step"], "loss": r["loss"], "lr": r.get("lr")} for r in records if "loss" in r]
    validation = [{"step": r["step"], "epoch": r.get("epoch"), "val_loss": r["val_loss"],
                   "val_loss_by_source": r.get("val_loss_by_source", {})} for r in records if "val_loss" in r]
    return {"train": train, "validation": validation}


def draw_loss_curve(curve: dict, png_path: Path, title: str = "loss") -> Optional[Path]:
    """Loss (and LR) against step, with the validation loss as points. Returns None when there is nothing to plot."""
    train, validation = curve["train"], curve["validation"]
    if not train and not validation:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="training loss")
    if validation:
        loss_ax.plot([r["step"] for r in validation], [r["val_loss"] for r in validation], "o-", color="tab:green",
                     label="validation loss")
    loss_ax.set_xlabel("optimisation step")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(loc="upper right")
    if train and any(r["lr"] is not None for r in train):
        lr_ax = loss_ax.twinx()
        lr_ax.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:orange", alpha=0.5)
        lr_ax.set_ylabel("learning rate", color="tab:orange")
    loss_ax.set_title(title)
    fig.tight_layout()
    tmp = Path(png_path).with_name(Path(png_path).name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)  # a watcher never sees half a PNG
    return Path(png_path)


def plot_loss_curve(metrics_path: Path, png_path: Path, title: str = "loss") -> Optional[Path]:
    """The loss curve PNG of a metrics.jsonl (None when there is nothing to plot)."""
    records = read_metrics(metrics_path) if Path(metrics_path).exists() else []
    return draw_loss_curve(loss_curve_data(records), png_path, title)
