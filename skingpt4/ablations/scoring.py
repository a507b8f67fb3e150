"""Evaluating one arm-seed with the project's own evaluation tasks (skingpt4/evaluation), per case.

For a projection checkpoint: the `metrics` task on the held-out cases (greedy free-text diagnosis read by the
class extractor, and the differential's top-1 beside it, per case), concept recall on the SKINCON-style cases
(when given), then `calibrate` on the validation split (the differential's temperature) and `differential` on
the held-out cases (ECE and Brier before and after the temperature). The tasks write their usual files under the
arm-seed's folder; what the table needs is returned.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from skingpt4.common.config import ConfigError, load_config

log = logging.getLogger("skingpt4.ablations")


class Evaluator:
    """One evaluation config; one chat engine per distinct model shape (e.g. with LoRA adapters), reused."""

    def __init__(self, eval_cfg: Path, cases: Path, val_cases: Optional[Path], concept_cases: Optional[Path],
                 eval_options: Sequence[str] = ()):
        self.eval_cfg, self.cases, self.val_cases, self.concept_cases = eval_cfg, cases, val_cases, concept_cases
        self.eval_options = tuple(eval_options)
        self._engines: dict = {}

    def options(self, checkpoint: Optional[Path], cases: Path, arm_options: Sequence[str]) -> list[str]:
        opts = [*self.eval_options, *arm_options, f"model.ckpt={checkpoint or 'null'}", f"evaluation.cases={cases}"]
        if self.val_cases:
            opts.append(f"evaluation.differential.validation_cases={self.val_cases}")
        return opts

    def digest(self) -> str:
        """What the evaluation depends on besides the checkpoint (config text and case lists)."""
        import hashlib

        digest = hashlib.sha256(self.eval_cfg.read_bytes())
        for part in (self.cases, self.val_cases, self.concept_cases):
            digest.update(str(part).encode() + b"\0" + (Path(part).read_bytes() if part and Path(part).is_file() else b""))
        digest.update(json.dumps(self.eval_options).encode())
        return digest.hexdigest()

    def context(self, checkpoint: Optional[Path], cases: Path, out: Path, arm_options: Sequence[str]):
        """An EvalContext for `checkpoint` (None: the model with its random projection, to learn its shape)."""
        from skingpt4.evaluation import tasks
        from skingpt4.models.loading import load_projection

        cfg = load_config(self.eval_cfg, self.options(checkpoint, cases, arm_options))
        # LoRA adapters live in the LLM itself: such a model is built from its own checkpoint (and kept for it)
        adapters = any(o.startswith("model.lora") for o in arm_options)
        key = (tuple(arm_options), str(checkpoint) if adapters else None)
        if adapters:
            self._engines = {k: v for k, v in self._engines.items() if k == key or k[1] is None}
        engine = self._engines.get(key)
        ctx = tasks.EvalContext(cfg, out, chat=engine)
        if engine is None:
            self._engines[key] = ctx.engine  # built with model.ckpt = this checkpoint
        elif checkpoint:
            load_projection(engine.model, str(checkpoint))
        ctx.checkpoint = str(checkpoint) if checkpoint else None
        return ctx

    def evaluate(self, checkpoint: Path, out: Path, arm_options: Sequence[str] = ()) -> dict:
        from skingpt4.evaluation import differential_tasks, tasks

        tables = io.StringIO()  # the tasks print their tables; the runner shows a progress bar instead
        with contextlib.redirect_stdout(tables):
            ctx = self.context(checkpoint, self.cases, out / "diagnosis", arm_options)
            summary = tasks.metrics(ctx, out / "diagnosis")
            rows = list(csv.DictReader((out / "diagnosis" / "predictions.csv").open(encoding="utf-8")))
            result = {"diagnosis": {k: summary["diagnosis"].get(k) for k in ("n", "accuracy", "macro_f1",
                                                                           "unknown_rate")},
                      "by_skin_type": summary["diagnosis"].get("by_skin_type", {}),
                      "cases": [r["case_id"] for r in rows],
                      "correct": [r["predicted"] == r["label"] for r in rows],
                      "differential_correct": [r["differential_top1"] == r["label"] for r in rows]}
            if self.concept_cases:
                concept_ctx = self.context(checkpoint, self.concept_cases, out / "concepts", arm_options)
                concepts = tasks.metrics(concept_ctx, out / "concepts").get("concepts", {})
                result["concept_recall"] = concepts.get("micro_recall")
            if self.val_cases:
                result["calibration"] = self._calibration(ctx, out, differential_tasks)
        return result

    @staticmethod
    def _calibration(ctx, out: Path, differential_tasks) -> dict:
        ctx.out = out / "calibrate"
        ctx.out.mkdir(parents=True, exist_ok=True)
        try:
            fitted = differential_tasks.calibrate(ctx)
        except (ConfigError, ValueError) as err:  # e.g. a fit refused (validation perfectly separated)
            log.warning("calibration of %s refused: %s", ctx.checkpoint, err)
            return {"refused": str(err)}
        ctx.out = out / "differential"
        ctx.out.mkdir(parents=True, exist_ok=True)
        test = differential_tasks.differential(ctx)
        return {"temperature": fitted["temperature"], "validation_n": fitted["n"],
                "validation_ece_before": fitted["before"]["ece"], "validation_ece_after": fitted["after"]["ece"],
                "test_top1": test["after"]["top1"], "test_ece_before": test["before"]["ece"],
                "test_ece_after": test["after"]["ece"], "test_brier_before": test["before"]["brier"],
                "test_brier_after": test["after"]["brier"]}
