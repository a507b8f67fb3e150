"""A 2-process gloo run (torchrun) of the tiny SkinGPT-4 matches a 1-process run with the same global batch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import train as train_script
from skingpt4.common.config import load_config
from skingpt4.models.checkpoints import read_checkpoint as load_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEP1 = str(REPO / "train_configs" / "tiny_step1.yaml")


@pytest.fixture
def data(train_data, tiny_assets) -> Path:
    return train_data


def projection(path):
    return load_checkpoint(path)["model"]


def assert_same(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


def test_two_gloo_processes_match_one_process(data, tmp_path, subprocess_env):
    # One caption for all: every sample has the same number of answer tokens, so the mean of per-process
    # token means (what DDP averages, as the original) equals the mean over the global batch.
    cfg = load_config(STEP1)  # merged over its base layers
    cfg.datasets = {"pairs": {"builder": "image_text_pairs", "storage": str(data / "same_caption")}}
    cfg_path = tmp_path / "pairs.yaml"
    OmegaConf.save(cfg, cfg_path)
    run = {"max_epoch": 1, "iters_per_epoch": 6, "progress_bar": False, "tensorboard": False, "log_freq": 1}
    two = [f"run.{k}={v}" for k, v in {**run, "batch_size_train": 2, "output_dir": tmp_path / "two"}.items()]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "train.py", "--cfg-path", str(cfg_path), "--options", *two], cwd=REPO, env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = [f"run.{k}={v}" for k, v in {**run, "batch_size_train": 4, "output_dir": tmp_path / "one"}.items()]
    single, _ = train_script.run_training(load_config(cfg_path, one))
    assert load_checkpoint(tmp_path / "two" / "checkpoint_last.pth")["global_batch_size"] == 4
    assert_same(projection(single.checkpoint), projection(tmp_path / "two" / "checkpoint_last.pth"), atol=1e-6)
    losses = {}
    for run_dir in ("one", "two"):
        lines = (tmp_path / run_dir / "metrics.jsonl").read_text().splitlines()
        losses[run_dir] = [json.loads(line)["loss"] for line in lines]
    assert len(losses["one"]) == 6 and losses["one"] == pytest.approx(losses["two"], abs=1e-5)


def test_a_loss_that_diverges_on_one_process_stops_every_process(data, tmp_path, subprocess_env):
    """A NaN loss on rank 1 only: both processes stop with the one-line error (none waits in a collective)."""
    options = [f"run.{k}={v}" for k, v in {"max_epoch": 1, "iters_per_epoch": 6, "progress_bar": False,
                                           "tensorboard": False, "batch_size_train": 2,
                                           "output_dir": tmp_path / "run"}.items()]
    cfg = load_config(STEP1)
    cfg.datasets = {"pairs": {"builder": "image_text_pairs", "storage": str(data / "same_caption")}}
    cfg_path = tmp_path / "pairs.yaml"
    OmegaConf.save(cfg, cfg_path)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(REPO / "tests" / "diverge_on_one_rank.py"), "--cfg-path", str(cfg_path),
                           "--options", *options], cwd=REPO, env=subprocess_env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode != 0
    assert "the loss is nan at step 2" in proc.stderr and "the loss is non-finite on another process at step 2" in (
        proc.stderr), proc.stderr[-3000:]
