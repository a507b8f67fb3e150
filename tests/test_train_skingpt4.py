"""train.py end to end with the tiny SkinGPT-4 on small prepared folders: the loss falls and only the projection
changes; step 2 starts from the step-1 checkpoint; the frozen-feature cache trains identically; bad settings
fail before training with a clear message."""
import json
from pathlib import Path

import pytest
import torch

import train as train_script
from skingpt4.common.config import ConfigError, load_config

from training_helpers import STEP1, STEP2, assert_same, options, projection, train


@pytest.fixture
def data(train_data, tiny_assets) -> Path:
    return train_data


def test_loss_falls_and_only_the_projection_changes(data, tmp_path):
    from skingpt4.models import build_model

    torch.manual_seed(42)  # train.py seeds with run.seed before building the model
    fresh = build_model({"variant": "tiny"}).state_dict()
    result, model = train(data, tmp_path / "run", iters_per_epoch=40, log_freq=10)
    trained = model.state_dict()
    changed = sorted(k for k in fresh if not torch.equal(fresh[k], trained[k]))
    assert changed == ["llama_proj.bias", "llama_proj.weight"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.03, losses
    assert set(projection(result.checkpoint)) == {"llama_proj.weight", "llama_proj.bias"}
    assert (tmp_path / "run" / "loss_curve.png").is_file()


def test_cached_frozen_features_train_the_same_as_pixels(data, tmp_path):
    eval_transform = ["datasets.skincon_concepts.vis_processor.name=blip2_image_eval"]
    pixels, _ = train(data, tmp_path / "pixels", extra=eval_transform)
    cached, _ = train(data, tmp_path / "cached", extra=eval_transform, cache_frozen_features=True)
    assert_same(projection(pixels.checkpoint), projection(cached.checkpoint), atol=1e-6)


def test_cache_refuses_the_random_train_transform(data, tmp_path):
    with pytest.raises(ConfigError, match="run.cache_frozen_features needs the deterministic eval image transform, "
                                          "but dataset 'skincon_concepts' uses Blip2ImageTrainProcessor"):
        train(data, tmp_path / "run", cache_frozen_features=True)


def test_step2_starts_from_the_step1_checkpoint(data, tmp_path):
    step1, _ = train(data, tmp_path / "step1", iters_per_epoch=2)
    step2_data = [f"datasets.dermnet.storage={data / 'dermnet'}", f"datasets.skin_notes.storage={data / 'notes'}",
                  f"model.ckpt={step1.checkpoint}"]
    cfg = load_config(STEP2, step2_data + [f"run.{k}={v}" for k, v in {
        "max_epoch": 1, "iters_per_epoch": 1, "init_lr": 1e-12, "min_lr": 0, "warmup_lr": 0, "weight_decay": 0,
        "progress_bar": False, "tensorboard": False, "output_dir": tmp_path / "step2"}.items()])
    step2, _ = train_script.run_training(cfg)
    # One step at a negligible learning rate: the step-2 projection is still the step-1 projection.
    assert_same(projection(step1.checkpoint), projection(step2.checkpoint), atol=1e-8)


@pytest.mark.parametrize("bad, message", [
    (["run.init_lr=-1e-4"], "config error: run.init_lr must be > 0, got -0.0001\n"),
    (["run.init_lr=0"], "config error: run.init_lr must be > 0, got 0.0\n"),  # one rule, one message
    (["run.batch_size_train=abc"], "config error: bad value for 'run.batch_size_train': Value 'abc' of type 'str' "
                                   "could not be converted to Integer\n"),  # one line, no OmegaConf details
    (["run.lr_sched=cosine"], "config error: run.lr_sched: unknown LR schedule 'cosine' valid choices: "
                              "linear_warmup_cosine_lr, linear_warmup_step_lr"),
    (["datasets.skincon_concepts.storage=/nonexistent/skincon"],
     "config error: config key 'datasets.skincon_concepts.storage': no such directory '/nonexistent/skincon'"),
    (["model.ckpt=/nonexistent/step1/checkpoint_last.pth"],
     "config error: config key 'model.ckpt': no such file '/nonexistent/step1/checkpoint_last.pth'; put the "
     "checkpoint to start from (for step 2: the step-1 checkpoint_last.pth) there"),
])
def test_bad_settings_fail_before_training(bad, message, data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--cfg-path", STEP1, "--options", *options(data, out), *bad]
    assert train_script.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert not out.exists()  # nothing was trained or written
