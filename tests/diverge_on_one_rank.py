"""`torchrun ... tests/diverge_on_one_rank.py --cfg-path ...`: train.py, except that on rank 1 the loss turns NaN
from the second micro-step on, as a bad batch on one GPU would. The other rank must stop too, not hang."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from skingpt4.runners import recipe  # noqa: E402

real_step = recipe.TrainStep.__call__
calls = {"n": 0}


def diverging_step(self, model, batch):
    out = real_step(self, model, batch)
    calls["n"] += 1
    if os.environ.get("RANK") == "1" and calls["n"] >= 2:
        out = {**out, "loss": out["loss"] * float("nan")}
    return out


recipe.TrainStep.__call__ = diverging_step
sys.exit(train.main(sys.argv[1:]))
