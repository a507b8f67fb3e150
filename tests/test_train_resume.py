"""Kill-and-resume equivalence with the tiny SkinGPT-4: a run stopped mid-way (run.stop_after_iters) or killed
with SIGKILL after a checkpoint, then resumed, ends with the same weights, LR and log as an uninterrupted run."""
import json
from pathlib import Path

import pytest

from training_helpers import STEP1, assert_same, projection
from training_helpers import options as base_options
from training_helpers import train as base_train


@pytest.fixture
def data(train_data, tiny_assets) -> Path:
    return train_data


def options(data, out, **run):
    return base_options(data, out, **{"batch_size_train": 2, **run})


def train(data, out, **run):
    return base_train(data, out, **{"batch_size_train": 2, **run})


def test_stopped_run_resumes_to_the_same_weights(data, tmp_path):
    straight, _ = train(data, tmp_path / "straight")
    stopped, _ = train(data, tmp_path / "split", stop_after_iters=4)
    assert (stopped.status, stopped.step) == ("stopped", 4)
    resumed, _ = train(data, tmp_path / "split", resume_ckpt_path=str(stopped.checkpoint))
    assert (resumed.status, resumed.step) == ("finished", 10)
    assert_same(projection(straight.checkpoint), projection(resumed.checkpoint))
    lrs = {}
    for run in ("straight", "split"):
        lrs[run] = [json.loads(line)["lr"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert lrs["straight"] == lrs["split"]  # same schedule position after the resume, no repeated records


def test_killed_process_resumes_to_the_same_weights(data, tmp_path, kill_train_after_checkpoint):
    run = dict(iters_per_epoch=16, log_freq=3)
    killed_at = kill_train_after_checkpoint(STEP1, options(data, tmp_path / "killed", save_freq=1, **run),
                                            tmp_path / "killed", min_step=2)
    assert 2 <= killed_at < 16
    last = tmp_path / "killed" / "checkpoint_last.pth"
    resumed, _ = train(data, tmp_path / "killed", save_freq=1, resume_ckpt_path=str(last), **run)
    straight, _ = train(data, tmp_path / "straight", **run)
    assert resumed.step == 16
    assert_same(projection(straight.checkpoint), projection(resumed.checkpoint))
    # the window of steps since the last record survived the kill in the checkpoint: the same log
    logged = {name: [{k: r[k] for k in ("step", "loss", "lr", "grad_norm")} for r in map(
        json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())] for name in ("killed", "straight")}
    assert logged["killed"] == logged["straight"]
