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
