"""The runner on a small nn.Module (a frozen encoder + a trainable projection, like SkinGPT-4) and a generated
regression dataset: loss falls, runs are reproducible, a stopped or Ctrl-C'd run resumes to the same weights,
only trainable parameters are saved, bad batches are skipped, and outputs stay in the output directory."""
import json
import os
import signal

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from skingpt4.common.config import ConfigError
from skingpt4.datasets import collate
from skingpt4.runners import DistInfo, Runner, Source, build_run_config
from skingpt4.models.checkpoints import read_checkpoint as load_checkpoint
from skingpt4.models.trainable import TrainableSet


class FrozenEncoderProjector(TrainableSet, nn.Module):
    TRAINABLE_PREFIXES = ("proj.", "norm.")

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(8, 8)
        self.proj = nn.Linear(8, 4)
        self.norm = nn.LayerNorm(4)
        self.apply_trainable_set()

    def forward(self, samples):
        pred = self.norm(self.proj(torch.tanh(self.encoder(samples["x"]))))
        return {"loss": nn.functional.mse_loss(pred, samples["y"])}


class Regression(Dataset):
    """y = fixed function of x; x gets per-item random noise (drawn from torch's RNG, like an augmentation)."""

    def __init__(self, n=64, bad=()):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.tanh(self.x[:, :4] * 2)
        self.bad = set(bad)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i in self.bad:
            return None
        return {"x": self.x[i] + 0.01 * torch.randn(8), "y": self.y[i], "text_input": f"item {i}"}


class ToyTask:
    def __init__(self, interrupt_at=None):
        self.calls = 0
        self.interrupt_at = interrupt_at

    def train_step(self, model, batch):
        self.calls += 1
        if self.calls == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # as a user pressing Ctrl-C in the middle of a step
        return model(batch)


CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def run_cfg(out, **overrides):
    base = dict(init_lr=0.05, min_lr=0.005, warmup_lr=0.001, warmup_steps=3, max_epoch=2, iters_per_epoch=10,
                batch_size_train=4, num_workers=0, output_dir=str(out), log_freq=2, progress_bar=False,
                tensorboard=False, weight_decay=0.01)
    base.update(overrides)
    return build_run_config(OmegaConf.create(base))


def train(out, task=None, dataset=None, **overrides):
    model = FrozenEncoderProjector()
    sources = [Source("toy", dataset or Regression(), 1.0)]
    runner = Runner(run_cfg(out, **overrides), (task or ToyTask()).train_step, collate, model, sources,
                    {"run": {"note": "toy"}}, CPU)
    return runner.train(), model


def trainable(model):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")}


def assert_same_weights(a, b):
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_loss_falls_and_only_trainable_parameters_change(tmp_path):
    frozen_before = FrozenEncoderProjector().encoder.state_dict()
    result, model = train(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "finished" and result.step == 20
    assert [r["step"] for r in records] == list(range(2, 21, 2))
    assert records[-1]["loss"] < 0.7 * records[0]["loss"]
    assert_same_weights(frozen_before, model.encoder.state_dict())
    payload = load_checkpoint(result.checkpoint)
    assert set(payload["model"]) == {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}
    assert payload["step"] == 20 and payload["epoch"] == 2 and payload["config"] == {"run": {"note": "toy"}}
    assert {"optimizer", "lr_scheduler", "scaler", "rng"} <= set(payload)
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint_0.pth", "checkpoint_1.pth", "checkpoint_last.pth", "config.yaml", "loss_curve.json",
        "loss_curve.png", "metrics.jsonl"]


def test_runs_are_reproducible(tmp_path):
    _, first = train(tmp_path / "a")
    _, second = train(tmp_path / "b")
    assert_same_weights(trainable(first), trainable(second))


def test_worker_processes_do_not_change_the_result(tmp_path):
    """Items carry their own seeds: 2 DataLoader workers give the weights of in-process loading."""
    _, in_process = train(tmp_path / "a", max_epoch=1)
    _, workers = train(tmp_path / "b", max_epoch=1, num_workers=2)
    assert_same_weights(trainable(in_process), trainable(workers))


def test_lr_follows_the_schedule(tmp_path):
    train(tmp_path / "run", log_freq=1)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    from skingpt4.runners.lr_schedules import ScheduleSpec, linear_warmup_cosine_lr

    spec = ScheduleSpec(0.05, 0.005, 0.001, 3, 10, 2)
    # The record of step s was trained with the LR of step s-1 (0-based).
    assert [r["lr"] for r in records] == pytest.approx([linear_warmup_cosine_lr(spec, s) for s in range(20)])


def test_stopped_run_resumes_to_the_same_weights(tmp_path):
    _, straight = train(tmp_path / "straight")
    stopped, _ = train(tmp_path / "split", stop_after_iters=7)
    assert stopped.status == "stopped" and stopped.step == 7
    assert load_checkpoint(stopped.checkpoint)["step"] == 7
    resumed, model = train(tmp_path / "split", resume_ckpt_path=str(stopped.checkpoint))
    assert resumed.status == "finished" and resumed.step == 20
    assert_same_weights(trainable(straight), trainable(model))
    records = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
               for run in ("straight", "split")}
    # The stop's partial record at step 7 was replaced by the resumed run's record of steps 7-8: the log is the
    # uninterrupted run's, record for record, without repeats.
    assert [r["step"] for r in records["split"]] == list(range(2, 21, 2))
    assert [r["loss"] for r in records["split"]] == [r["loss"] for r in records["straight"]]


def test_ctrl_c_saves_then_resume_matches(tmp_path):
    _, straight = train(tmp_path / "straight", accum_grad_iters=2)
    # SIGINT during micro-batch 11 (step 6, second half): the step completes, is saved, the run returns.
    interrupted, _ = train(tmp_path / "split", task=ToyTask(interrupt_at=11), accum_grad_iters=2)
    assert interrupted.status == "interrupted" and interrupted.step == 6
    assert load_checkpoint(tmp_path / "split" / "checkpoint_last.pth")["step"] == 6
    resumed, model = train(tmp_path / "split", accum_grad_iters=2,
                           resume_ckpt_path=str(tmp_path / "split" / "checkpoint_last.pth"))
    assert resumed.step == 20
    assert_same_weights(trainable(straight), trainable(model))


def test_resuming_from_a_weights_only_checkpoint_says_what_to_do(tmp_path):
    from skingpt4.models.checkpoints import save_checkpoint

    weights = save_checkpoint(tmp_path / "minigpt4.pth", trainable(FrozenEncoderProjector()))
    with pytest.raises(ConfigError, match="lacks .'optimizer', 'lr_scheduler', 'step'.: it holds weights only, not a "
                                          "run to resume; to start from its projection set model.ckpt"):
        train(tmp_path / "run", resume_ckpt_path=str(weights))


def test_signal_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    train(tmp_path / "run", max_epoch=1, iters_per_epoch=2)
    assert signal.getsignal(signal.SIGINT) is before


def test_existing_run_is_not_overwritten(tmp_path):
    train(tmp_path / "run", max_epoch=1, iters_per_epoch=2)
    with pytest.raises(ConfigError, match="already holds a run .checkpoint_last.pth.; continue it with "
                                          "run.resume_ckpt_path="):
        train(tmp_path / "run", max_epoch=1, iters_per_epoch=2)


def test_bad_batches_are_skipped_and_counted(tmp_path):
    # 48 of 64 items are bad: batches lose items, all-bad batches are skipped; training goes on.
    result, _ = train(tmp_path / "run", dataset=Regression(bad=range(48)), batch_size_train=2, log_freq=20,
                      max_epoch=1, iters_per_epoch=20)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result.status == "finished" and result.last_loss == pytest.approx(record["loss"])
    assert record["skipped_batches"] > 0 and record["bad_items"] > 2 * record["skipped_batches"]
    assert record["bad_items"] < 40


def test_gradient_accumulation_matches_a_big_batch(tmp_path):
    """2 micro-batches of 4 == 1 batch of 8 for a per-item mean loss (same items, same order)."""
    _, accumulated = train(tmp_path / "a", batch_size_train=4, accum_grad_iters=2, max_epoch=1)
    _, big = train(tmp_path / "b", batch_size_train=8, accum_grad_iters=1, max_epoch=1)
    for key, value in trainable(accumulated).items():
        torch.testing.assert_close(value, trainable(big)[key], rtol=1e-5, atol=1e-6)


def test_fp16_needs_a_gpu(tmp_path):
    with pytest.raises(ConfigError, match="run.precision=fp16 needs a CUDA device; on CPU use bf16 or fp32"):
        train(tmp_path / "run", precision="fp16")


def test_bf16_autocast_trains_on_cpu(tmp_path):
    result, _ = train(tmp_path / "run", precision="bf16", max_epoch=1)
    assert result.status == "finished" and result.last_loss < 1.0
