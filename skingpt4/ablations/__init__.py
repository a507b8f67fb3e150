"""The paper's ablations, reproduced in the tiny world (docs/evaluation.md, "Ablations"):

    python -m skingpt4.ablations --out output/ablations

trains and evaluates each arm -- untrained, step 1 only, step 2 only, step 1 then step 2, the same without the
doctors' notes, and with LoRA adapters on the LLM -- over several seeds, and writes one table (mean ± std over
seeds, 95% bootstrap intervals over cases, the trivial pixel baselines, the calibrated differential's temperature
and ECE) as `ablations.md` + `ablations.json`, and one plot, `ablations.png`. Resumable: finished arm-seeds are
kept. The same command runs at full size with real configs (`--step1-cfg`, `--step2-cfg`, `--eval-cfg`,
`--launcher`).

  arms.py     the arms, their training stages (shared between arms, resumable)
  scoring.py  one arm-seed evaluated with the evaluation tasks, per case
  table.py    statistics, the ordering checks, markdown / JSON / plot
  runner.py   the loop over (arm, seed) with its result files
"""
from skingpt4.ablations.arms import ARMS, DEFAULT_ARMS, Arm, Plan
from skingpt4.ablations.runner import Ablation
from skingpt4.ablations.scoring import Evaluator

__all__ = ["ARMS", "DEFAULT_ARMS", "Ablation", "Arm", "Evaluator", "Plan"]
