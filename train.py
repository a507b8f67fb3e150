"""Train SkinGPT-4 from a YAML config (the recipe: skingpt4/runners/recipe.py; docs/training.md).

    python train.py --cfg-path train_configs/step1.yaml
    python train.py --cfg-path train_configs/tiny_step1.yaml --options run.max_epoch=1 run.output_dir=output/try
    torchrun --nproc-per-node 8 train.py --cfg-path ...          # one process per GPU (gloo on CPU)
    accelerate launch --multi_gpu --num_processes 8 train.py --cfg-path ...

Exit status: 0 finished (or stopped by run.stop_after_iters), 1 training failed (a non-finite loss, no usable
training sample), 2 configuration error, 130 interrupted. Errors are one line on stderr, without a traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train SkinGPT-4 from a YAML config (see docs/training.md).")
    parser.add_argument("--cfg-path", required=True, help="path to the training YAML (train_configs/*.yaml)")
    parser.add_argument("--options", nargs="+", default=[],
                        help="override config keys, e.g. run.init_lr=5e-5 run.output_dir=output/x")
    return parser.parse_args(argv)


def run_training(cfg):
    """setup -> train -> cleanup of a loaded config. Returns (TrainResult, model)."""
    from skingpt4.runners.recipe import run_training as recipe

    return recipe(cfg)


def main(argv=None) -> int:
    args = parse_args(argv)
    from skingpt4.common.config import ConfigError, load_config

    from skingpt4.runners.runner import TrainingError

    try:
        result, _ = run_training(load_config(args.cfg_path, args.options))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"training error: {err}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":
        print(f"[train] {result.status} at step {result.step}; last logged loss {result.last_loss}; "
              f"checkpoint {result.checkpoint}; outputs in {result.output_dir}")
    if result.status in ("interrupted", "aborted"):
        return 130
    if result.last_loss is not None and not math.isfinite(result.last_loss):
        print(f"training error: the run ended with a non-finite loss ({result.last_loss}): its last logged steps "
              "had no usable sample; check the datasets and the metrics in " f"{result.output_dir / 'metrics.jsonl'}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
