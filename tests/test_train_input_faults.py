"""Bad training input, as a user meets it: each is a one-line error with exit status 2 (no traceback), found
before the model loads where it can be, or a run that trained on nothing exits non-zero instead of 'loss nan'."""
import pytest

import skingpt4.models.build as model_build
import train as train_script
from training_helpers import STEP1, options


@pytest.fixture
def no_model(monkeypatch):
    """These faults must be found before the model is built: building it fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the config was checked")
    monkeypatch.setattr(model_build, "build_model", refuse)


def config_error(capsys, train_data, out, *extra, **run) -> str:
    argv = ["--cfg-path", STEP1, "--options", *options(train_data, out, **run), *extra]
    assert train_script.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


def test_output_dir_that_is_a_file(train_data, tmp_path, capsys, no_model):
    file = tmp_path / "out"
    file.write_text("x")
    for out in (file, file / "sub"):
        assert config_error(capsys, train_data, out) == (
            f"config error: run.output_dir '{out}': '{file}' is a file, not a directory; choose another "
            "run.output_dir")


def test_output_dir_holding_a_run_is_refused_before_the_model_loads(train_data, tmp_path, capsys, no_model):
    (tmp_path / "checkpoint_last.pth").write_bytes(b"x")
    assert config_error(capsys, train_data, tmp_path) == (
        f"config error: run.output_dir '{tmp_path}' already holds a run (checkpoint_last.pth); continue it with "
        f"run.resume_ckpt_path={tmp_path / 'checkpoint_last.pth'} or choose another run.output_dir")


@pytest.mark.parametrize("key,value", [("init_lr", "inf"), ("max_grad_norm", "nan"), ("min_lr", "nan"),
                                       ("warmup_lr", "-inf")])
def test_non_finite_numbers(train_data, tmp_path, capsys, no_model, key, value):
    assert config_error(capsys, train_data, tmp_path / "run", **{key: value}) == (
        f"config error: run.{key} must be a finite number, got {float(value)}")


# ---------------------------------------------------------------- faults found once the data and weights are read
def run_train(capsys, train_data, out, *extra, **run):
    """-> (exit status, last stderr line); no traceback either way."""
    status = train_script.main(["--cfg-path", STEP1, "--options", *options(train_data, out, **run), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, (err.strip().splitlines() or [""])[-1]


def test_a_checkpoint_with_nan_weights_is_refused(train_data, tiny_assets, tmp_path, capsys):
    from skingpt4.models.checkpoints import read_checkpoint, save_checkpoint

    state = read_checkpoint(tiny_assets / "projection.pth")["model"]
    name = sorted(state)[0]
    state[name] = state[name].clone().fill_(float("nan"))
    broken = save_checkpoint(tmp_path / "nan.pth", state)
    status, line = run_train(capsys, train_data, tmp_path / "run", f"model.ckpt={broken}")
    assert status == 2
    # refused as the checkpoint is read (models/loading.py), naming the key, the file and the weight
    assert line.startswith(f"config error: config key 'model.ckpt': '{broken}' holds ") and (
        f"(NaN or infinity) in '{name}'" in line)
    assert not (tmp_path / "run" / "checkpoint_last.pth").exists()


def test_a_binary_prompt_file_is_one_line(train_data, tmp_path, capsys, no_model):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    assert config_error(capsys, train_data, tmp_path / "run", prompt_path=prompts).startswith(
        f"config error: run.prompt_path '{prompts}' is not UTF-8 text (invalid start byte at byte ")


@pytest.mark.parametrize("value", ["-5", "0"])
def test_max_pixels_below_one_is_refused_before_the_model(train_data, tmp_path, capsys, no_model, value):
    assert config_error(capsys, train_data, tmp_path / "run", f"datasets.skincon_concepts.max_pixels={value}") == (
        f"config error: 'datasets.skincon_concepts.max_pixels' must be >= 1 or null (no limit), got {value}")


def test_a_wholly_unusable_training_set_fails(train_data, tiny_assets, tmp_path, capsys):
    import shutil

    bad = tmp_path / "skincon"
    shutil.copytree(train_data / "skincon", bad)
    for image in (bad / "image").iterdir():
        image.write_bytes(b"not a jpeg at all")
    status, line = run_train(capsys, tmp_path, tmp_path / "run", iters_per_epoch=25, log_freq=5)
    assert status == 1
    assert line == ("training error: no usable training sample in 20 steps in a row (up to step 20): every batch "
                    "held only bad images (skipped images: skincon_concepts: not_an_image=80); check the datasets "
                    "(data_prep/check_notes.py lists bad images) and their max_pixels")
    # a short run that trains on nothing fails at its end
    status, line = run_train(capsys, tmp_path, tmp_path / "short", iters_per_epoch=3)
    assert status == 1 and line.startswith("training error: no usable training sample in 3 steps in a row")


def test_a_diverging_run_exits_non_zero_keeping_its_checkpoint(train_data, tiny_assets, tmp_path, capsys):
    status, line = run_train(capsys, train_data, tmp_path / "run", init_lr="1e30", min_lr=0, warmup_steps=0,
                             save_freq=1)
    assert status == 1
    assert line.startswith("training error: the loss is ") and "training diverged or the weights are broken" in line
    step = int(line.split(" at step ")[1].split(":")[0])
    assert step >= 2
    from skingpt4.models.checkpoints import read_checkpoint

    assert read_checkpoint(tmp_path / "run" / "checkpoint_last.pth")["step"] == step - 1  # the last good step


def test_a_resume_into_another_step_count_is_refused(train_data, tiny_assets, tmp_path, capsys, monkeypatch):
    status, _ = run_train(capsys, train_data, tmp_path / "run", iters_per_epoch=4, stop_after_iters=3)
    assert status == 0
    monkeypatch.setattr(model_build, "build_model", lambda *a, **k: pytest.fail("the model was built first"))
    last = tmp_path / "run" / "checkpoint_last.pth"
    status, line = run_train(capsys, train_data, tmp_path / "run", iters_per_epoch=2, resume_ckpt_path=last)
    assert status == 2
    assert line == (f"config error: config key 'run.resume_ckpt_path': '{last}' is step 3 of a run of 4 steps (1 "
                    "epochs x 4 iterations), but this config trains 2 steps (1 x 2); resume with run.max_epoch=1 "
                    f"run.iters_per_epoch=4, or start a new run from its weights with model.ckpt={last}")


def test_a_torn_last_metrics_line_does_not_stop_a_resume(train_data, tiny_assets, tmp_path, capsys):
    import json

    status, _ = run_train(capsys, train_data, tmp_path / "run", iters_per_epoch=4, stop_after_iters=2, save_freq=1)
    assert status == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    with metrics.open("a") as handle:  # what a kill in the middle of appending a record leaves
        handle.write('{"step": 3, "epoch": 0, "lo')
    status, _ = run_train(capsys, train_data, tmp_path / "run", iters_per_epoch=4,
                          resume_ckpt_path=tmp_path / "run" / "checkpoint_last.pth")
    assert status == 0
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4]


def test_tensorboard_is_off_by_default_and_asking_for_it_without_the_package_is_one_line(
        train_data, tmp_path, capsys, no_model, monkeypatch):
    import skingpt4.runners.recipe as recipe
    from skingpt4.runners.config import RunConfig

    assert RunConfig().tensorboard is False
    monkeypatch.setattr(recipe, "tensorboard_available", lambda: False)
    assert config_error(capsys, train_data, tmp_path / "run", tensorboard=True) == (
        "config error: run.tensorboard=true needs the tensorboard package, which is optional: install it with pip "
        "install 'skingpt4[tensorboard]' (or pip install tensorboard), or set run.tensorboard=false (metrics.jsonl "
        "and loss_curve.png/json are written either way)")


def test_log_lines_are_printed_above_the_progress_bar_not_across_it(train_data, tmp_path, subprocess_env):
    import re
    import subprocess
    import sys

    from training_helpers import REPO

    args = options(train_data, tmp_path / "run", iters_per_epoch=6, log_freq=2, progress_bar="true")
    proc = subprocess.run([sys.executable, "train.py", "--cfg-path", STEP1, "--options", *args], cwd=REPO,
                          env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logged = [line for line in proc.stderr.split("\n") if "skingpt4.train: step " in line]
    assert len(logged) == 3
    for line in logged:  # what follows the bar's last carriage return starts with the log format, not bar text
        assert re.match(r"^\d\d:\d\d:\d\d \[rank 0\] skingpt4.train: step \d/6 loss", line.split("\r")[-1]), line
    assert "train: 100%" in proc.stderr  # the bar was drawn


def test_an_older_checkpoint_without_its_schedule_is_checked_by_its_step():
    from skingpt4.common.config import ConfigError
    from skingpt4.runners.runner import check_resume_schedule

    check_resume_schedule({"step": 2}, "old.pth", 1, 2)  # within the schedule: resumes
    with pytest.raises(ConfigError, match=r"^config key 'run.resume_ckpt_path': 'old.pth' is step 200, beyond the 2 "
                                          r"steps this config trains \(1 x 2\); "):
        check_resume_schedule({"step": 200}, "old.pth", 1, 2)
