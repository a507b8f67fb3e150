"""Ctrl-C on a real `python train.py` process group (as a terminal sends it: to the trainer and its DataLoader
workers): the current step finishes, checkpoint_last.pth is saved with the steps done, the exit status is 130
and the message says how to resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from skingpt4.models.checkpoints import read_checkpoint as load_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEP1 = str(REPO / "train_configs" / "tiny_step1.yaml")


def test_ctrl_c_saves_a_checkpoint_and_exits_130(train_data, tmp_path, subprocess_env):
    out = tmp_path / "run"
    options = [f"datasets.skincon_concepts.storage={train_data / 'skincon'}", f"run.output_dir={out}",
               "run.max_epoch=1", "run.iters_per_epoch=400", "run.log_freq=1", "run.progress_bar=false",
               "run.batch_size_train=2", "run.num_workers=2", "run.accum_grad_iters=2"]
    proc = subprocess.Popen([sys.executable, "train.py", "--cfg-path", STEP1, "--options", *options], cwd=REPO,
                            env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # the whole group, workers included, like Ctrl-C in a terminal
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    saved = load_checkpoint(out / "checkpoint_last.pth")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert 2 <= saved["step"] < 400 and records[-1]["step"] == saved["step"]
    assert "received SIGINT: stopping after the current step" in stderr
    assert f"interrupted at step {saved['step']} of 400; continue with --options run.resume_ckpt_path=" in stderr
    assert f"[train] interrupted at step {saved['step']}" in stdout
    assert (out / "loss_curve.png").is_file()
