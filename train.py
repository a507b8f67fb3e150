"""Train SkinGPT-4 (or any registered task) from a YAML config.

    python train.py --cfg-path train_configs/skingpt4_llama2_13bchat_step1.yaml
    python train.py --cfg-path train_configs/tiny_step1.yaml --options run.max_epoch=1 run.output_dir=output/try
    torchrun --nproc-per-node 8 train.py --cfg-path ...          # one process per GPU (gloo on CPU)
    accelerate launch --multi_gpu --num_processes 8 train.py --cfg-path ...

Exit status: 0 finished (or stopped by run.stop_after_iters), 2 configuration error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys

import torch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train SkinGPT-4 from a YAML config (see docs/training.md).")
    parser.add_argument("--cfg-path", required=True, help="path to the training YAML (train_configs/*.yaml)")
    parser.add_argument("--options", nargs="+", default=[],
                        help="override config keys, e.g. run.init_lr=5e-5 run.output_dir=output/x")
    return parser.parse_args(argv)


def run_training(cfg):
    """Build task, datasets, model and runner from a loaded config and train. Returns (TrainResult, model)."""
    from skingpt4.common import registry
    from skingpt4.common.config import to_plain
    from skingpt4.common.paths import check_config_paths
    from skingpt4.runners import build_run_config, init_distributed

    run_cfg = build_run_config(cfg.get("run"))
    check_config_paths(cfg, "train")  # every wrong path at once, before anything loads
    task = registry.tasks.get(run_cfg.task)(run_cfg)
    task.check_config(cfg)  # cheap checks (paths of checkpoints, sections) before anything heavy
    dist = init_distributed(run_cfg.device, run_cfg.dist_backend)
    logging.basicConfig(level=logging.INFO if dist.is_main else logging.WARNING,
                        format=f"%(asctime)s [rank {dist.rank}] %(name)s: %(message)s", datefmt="%H:%M:%S")
    random.seed(run_cfg.seed)
    torch.manual_seed(run_cfg.seed)  # the projection's initialisation when no model.ckpt is given
    sources = task.build_datasets(cfg.datasets)
    model = task.build_model(cfg.model, dist.device)
    sources = task.prepare_sources(model, sources, dist)
    runner = registry.runners.get(run_cfg.runner)(run_cfg, task, model, sources, to_plain(cfg), dist)
    return runner.train(), model


def main(argv=None) -> int:
    args = parse_args(argv)
    from skingpt4.common.config import ConfigError, load_config
    from skingpt4.runners.distributed import shutdown

    try:
        result, _ = run_training(load_config(args.cfg_path, args.options))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    if os.environ.get("RANK", "0") == "0":
        print(f"[train] {result.status} at step {result.step}; last logged loss {result.last_loss}; "
              f"checkpoint {result.checkpoint}; outputs in {result.output_dir}")
    return 130 if result.status in ("interrupted", "aborted") else 0


if __name__ == "__main__":
    sys.exit(main())
