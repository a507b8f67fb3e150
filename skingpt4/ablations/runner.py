"""The ablation runner: every (arm, seed) trained (stages shared, arms.py), evaluated (scoring.py) and written as
`results/<arm>/seed<s>.json` (atomically, with a fingerprint of what it was computed from); then the table.

Resumable: an arm-seed whose result file matches its fingerprint is kept, not retrained or re-evaluated; a
stage whose `stage.json` matches its config is reused. Interrupting the run (Ctrl-C, a kill) loses at most the
arm-seed in progress.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from skingpt4.ablations.arms import (ARMS, Arm, Plan, arm_fingerprint, config_digest, train_stage,
                                     untrained_checkpoint, write_json_atomic)
from skingpt4.ablations.scoring import Evaluator
from skingpt4.ablations.table import markdown, plot, summarise

log = logging.getLogger("skingpt4.ablations")
RESULTS = "results"


@dataclass
class Ablation:
    out: Path
    plan: Plan
    evaluator: Evaluator
    arms: Sequence[str]
    seeds: Sequence[int]
    data: Optional[Path] = None          # a make_synthetic folder / prepared Dermnet root: the pixel baselines
    progress: bool = True
    on_result: Optional[Callable[[str, int, dict], None]] = field(default=None, repr=False)

    def result_path(self, arm: str, seed: int) -> Path:
        return self.out / RESULTS / arm / f"seed{seed}.json"

    def run(self) -> dict:
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        units = [(a, s) for s in self.seeds for a in self.arms]
        eval_digest = self.evaluator.digest()
        results: dict[str, dict[int, dict]] = {a: {} for a in self.arms}
        kept = trained = 0
        bar = tqdm(total=len(units), desc="ablation arms", unit="arm-seed", disable=not self.progress)
        for arm_name, seed in units:
            arm = ARMS[arm_name]
            stages = self.plan.stage_configs(arm, seed, self.out)
            fingerprint = arm_fingerprint(arm, seed, [config_digest(c) for _, _, c in stages], eval_digest)
            path = self.result_path(arm_name, seed)
            previous = _read(path)
            if previous and previous.get("fingerprint") == fingerprint:
                results[arm_name][seed] = previous
                kept += 1
                bar.update(1)
                continue
            bar.set_postfix_str(f"{arm_name} seed {seed}")
            started = time.perf_counter()
            result = self._run_one(arm, seed, stages)
            result.update({"arm": arm_name, "seed": seed, "fingerprint": fingerprint,
                           "seconds": time.perf_counter() - started})
            write_json_atomic(path, result)
            results[arm_name][seed] = result
            trained += 1
            if self.on_result:
                self.on_result(arm_name, seed, result)
            bar.update(1)
        bar.close()
        return self.write_table(results, kept=kept, computed=trained)

    def _run_one(self, arm: Arm, seed: int, stages) -> dict:
        stage_records = {}
        for name, folder, cfg in stages:
            stage_records[name] = train_stage(self.plan, folder, cfg)
        if stages:
            checkpoint = stages[-1][1] / "checkpoint_last.pth"
        else:
            model = self.evaluator.context(None, self.evaluator.cases, self.out / "evaluation", ()).engine.model
            checkpoint = untrained_checkpoint(model, seed, self.out / "runs" / f"seed{seed}" / "untrained" /
                                              "projection.pth")
        out = self.out / "evaluation" / arm.name / f"seed{seed}"
        result = self.evaluator.evaluate(checkpoint, out, arm.eval_options)
        result["stages"] = stage_records
        result["checkpoint"] = str(checkpoint)
        return result

    def write_table(self, results: dict, kept: int = 0, computed: int = 0) -> dict:
        baselines = None
        if self.data is not None and (Path(self.data) / "prepared" / "dermnet_test" / "filter_cap.json").is_file():
            from skingpt4.tiny.baselines import dermnet_baselines

            baselines = dermnet_baselines(self.data)
        table = summarise({a: r for a, r in results.items() if r}, ARMS, baselines)
        table.update({"arms": list(self.arms), "seeds": list(self.seeds), "kept": kept, "computed": computed})
        write_json_atomic(self.out / "ablations.json", table)
        text = markdown(table)
        tmp = self.out / ".ablations.md.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.out / "ablations.md")
        plot(table, self.out / "ablations.png")
        return table


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
