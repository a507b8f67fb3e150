"""Run under torchrun: train.py's entry point on one config several times in the same processes and the same process
group (one start-up for several distributed runs). Usage: train_twice.py CFG KEY=VALUE... [+ KEY=VALUE...]"""
import sys

import torch.distributed as dist

import train as train_script
from skingpt4.common.config import load_config
from skingpt4.runners import recipe

if __name__ == "__main__":
    cfg_path, runs = sys.argv[1], [[]]
    for arg in sys.argv[2:]:
        if arg == "+":
            runs.append([])
        else:
            runs[-1].append(arg)
    recipe.shutdown = lambda: None  # keep the process group between runs (init_distributed reuses it)
    for options in runs:
        train_script.run_training(load_config(cfg_path, options))
        dist.barrier()
    dist.destroy_process_group()
