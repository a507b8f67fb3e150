"""Run under torchrun: train.py's entry point on one config several times in the same processes (one start-up for
several distributed runs). Usage: train_twice.py CFG KEY=VALUE... [+ KEY=VALUE...] (one run per group)"""
import sys

import train as train_script
from skingpt4.common.config import load_config

if __name__ == "__main__":
    cfg_path, runs = sys.argv[1], [[]]
    for arg in sys.argv[2:]:
        if arg == "+":
            runs.append([])
        else:
            runs[-1].append(arg)
    for options in runs:
        train_script.run_training(load_config(cfg_path, options))
