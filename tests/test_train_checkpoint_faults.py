"""Faults around training checkpoints, as a user meets them: a bad run.resume_ckpt_path is a one-line error and
exit status 2 (never a traceback, never advice to load a pickle unsafely), the unfinished files a killed save
leaves are swept, and a resumed run logs exactly the metrics of an uninterrupted one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train as train_script
from skingpt4.models.checkpoints import CheckpointError, read_checkpoint, save_checkpoint, sweep_stale_temp_files
from training_helpers import STEP1, options
from training_helpers import train as base_train

REPO = Path(__file__).resolve().parents[1]


class RunsCode:
    """Unpickling this calls os.system (a stand-in for a malicious checkpoint)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(folder: Path) -> dict[str, Path]:
    marker = folder / "code_ran"
    files = {name: folder / f"{name}.pth" for name in ("pickle_zip", "pickle_legacy", "truncated", "empty")}
    payload = {"model": {"llama_proj.weight": torch.zeros(2)}, "step": 1, "x": RunsCode(marker)}
    torch.save(payload, files["pickle_zip"])
    torch.save(payload, files["pickle_legacy"], _use_new_zipfile_serialization=False)
    save_checkpoint(folder / "good.pth", {"llama_proj.weight": torch.randn(64, 64)}, step=1)
    data = (folder / "good.pth").read_bytes()
    files["truncated"].write_bytes(data[: len(data) * 2 // 3])
    files["empty"].write_bytes(b"")
    return files


EXPECTED = {
    "pickle_zip": "was refused: it asks to import and call 'posix.system', which a file of weights never needs. It "
                  "is not a safe checkpoint",
    "pickle_legacy": "was refused: it asks to import and call 'posix.system', which a file of weights never needs. "
                     "It is not a safe checkpoint",
    "truncated": "is damaged or cut short",
    "empty": "is empty (0 bytes)",
}


def test_read_checkpoint_names_key_file_and_fault(tmp_path):
    for name, path in bad_checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(path, "run.resume_ckpt_path")
        message = str(caught.value)
        assert message.startswith(f"config key 'run.resume_ckpt_path': checkpoint '{path}' {EXPECTED[name]}")
        assert "\n" not in message and "weights_only" not in message, message
    assert not (tmp_path / "code_ran").exists()  # refused, not run


def test_bad_resume_checkpoint_is_one_line_and_exit_2(train_data, tiny_assets, tmp_path, capsys):
    files = bad_checkpoints(tmp_path)
    for name, path in files.items():
        argv = ["--cfg-path", STEP1, "--options", *options(train_data, tmp_path / f"run_{name}"),
                f"run.resume_ckpt_path={path}"]
        assert train_script.main(argv) == 2, name
        err = capsys.readouterr().err  # (also the model's loading progress: the tiny model is built first)
        assert "Traceback" not in err and err.endswith("\n"), err
        assert err.splitlines()[-1].startswith(
            f"config error: config key 'run.resume_ckpt_path': checkpoint '{path}' {EXPECTED[name]}"), err
    assert not (tmp_path / "code_ran").exists()


def test_a_killed_save_leaves_temp_files_that_the_next_start_sweeps(tmp_path, subprocess_env):
    """SIGKILL (here: os._exit) in the middle of save_checkpoint, as a kill during a checkpoint write."""
    out = tmp_path / "run"
    script = ("import os, sys, torch; from skingpt4.models.checkpoints import save_checkpoint\n"
              "def dies(obj, fh): fh.write(b'PK half a zip'); fh.flush(); os._exit(9)\n"
              "torch.save = dies\n"
              f"save_checkpoint({str(out / 'checkpoint_last.pth')!r}, {{'w': torch.ones(3)}})\n")
    for _ in range(2):
        assert subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env).returncode == 9
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 2 and all(n.startswith(".checkpoint_last.pth.") and n.endswith(".tmp") for n in left)
    others = [out / ".notes.tmp", out / "checkpoint_last.pth.tmp", out / "mine.txt"]  # not of our naming
    for path in others:
        path.write_text("keep me")
    assert sorted(p.name for p in sweep_stale_temp_files(out)) == left
    assert sorted(out.iterdir()) == sorted(others)


def test_start_and_resume_sweep_stale_temp_files(train_data, tiny_assets, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint_last.pth.k2j4_x9a.tmp"
    stale.write_bytes(b"PK half")
    stopped, _ = base_train(train_data, out, stop_after_iters=2, log_freq=2)
    assert not stale.exists()
    stale.write_bytes(b"PK half")
    (out / ".checkpoint_0.pth.abcdefgh.tmp").write_bytes(b"PK")
    with caplog.at_level("INFO", logger="skingpt4.checkpoints"):
        base_train(train_data, out, resume_ckpt_path=str(stopped.checkpoint), stop_after_iters=3, log_freq=2)
    assert not stale.exists() and not (out / ".checkpoint_0.pth.abcdefgh.tmp").exists()
    assert "removed 2 unfinished checkpoint file(s) a killed run left in" in caplog.text


COMPARED = ("step", "epoch", "loss", "lr", "grad_norm", "bad_items", "skipped_batches")


def logged(path: Path) -> list[dict]:
    return [{k: r[k] for k in COMPARED} for r in map(json.loads, path.read_text().splitlines())]


def test_resumed_run_logs_the_metrics_of_an_uninterrupted_run(train_data, tiny_assets, tmp_path):
    """log_freq 3, stopped after 4 and after 8 steps: each resume continues the window of the stopped run."""
    run = dict(log_freq=3, batch_size_train=2)
    base_train(train_data, tmp_path / "straight", **run)
    split = tmp_path / "split"
    first, _ = base_train(train_data, split, stop_after_iters=4, **run)
    stopped_log = logged(split / "metrics.jsonl")
    assert [r["step"] for r in stopped_log] == [3, 4]  # the stop writes the steps since the last record...
    second, _ = base_train(train_data, split, stop_after_iters=8, resume_ckpt_path=str(first.checkpoint), **run)
    base_train(train_data, split, resume_ckpt_path=str(second.checkpoint), **run)
    straight = logged(tmp_path / "straight" / "metrics.jsonl")
    assert [r["step"] for r in straight] == [3, 6, 9, 10]
    assert logged(split / "metrics.jsonl") == straight  # ...and a resume replaces that record by the full window
