"""Helpers shared by the training tests: run train.py's entry point in-process on the tiny step-1 config."""
from pathlib import Path

import torch

import train as train_script
from skingpt4.common.config import load_config
from skingpt4.models.checkpoints import read_checkpoint as load_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEP1 = str(REPO / "train_configs" / "tiny_step1.yaml")
STEP2 = str(REPO / "train_configs" / "tiny_step2.yaml")


def options(data, out, **run):
    """--options for a short tiny run on the `train_data` fixture's folders, writing to `out`."""
    settings = {"max_epoch": 1, "iters_per_epoch": 10, "log_freq": 1, "progress_bar": False, "tensorboard": False,
                "output_dir": str(out), **run}
    return [f"datasets.skincon_concepts.storage={data / 'skincon'}"] + [f"run.{k}={v}" for k, v in settings.items()]


def train(data, out, cfg_path=STEP1, extra=(), **run):
    return train_script.run_training(load_config(cfg_path, options(data, out, **run) + list(extra)))


def projection(path):
    return load_checkpoint(path)["model"]


def assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)
