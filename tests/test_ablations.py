"""The ablation runner (skingpt4/ablations) on a smaller world: two arms in the right order, result files written
atomically, the table and plot, and resuming after a run was killed mid-way (finished arm-seeds are kept, not
retrained)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["run.max_epoch=1", "run.iters_per_epoch=60", "run.log_freq=20"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from data_prep.make_synthetic import make_synthetic

    data = tmp_path_factory.mktemp("ablation_world") / "data"
    make_synthetic(data, per_class=8, test_per_class=2, skincon_images=12, ddi_images=2, notes_per_class=1,
                   skincon_test_images=1, val_per_class=2, size=128, stats=False, log=lambda m: None)
    return data


def _command(out: Path, data: Path, assets: Path, arms=("untrained", "step2_only")) -> list[str]:
    return [sys.executable, "-m", "skingpt4.ablations", "--out", str(out), "--arms", *arms, "--seeds", "0",
            "--data", str(data), "--assets", str(assets),
            "--step1-cfg", "train_configs/main_job_step1.yaml", "--step2-cfg", "train_configs/main_job_step2.yaml",
            "--eval-cfg", "eval_configs/main_job.yaml", "--concept-cases", "none", "--no-progress",
            "--train-options", *TRAIN]


def test_two_arms_in_order_and_resume_after_a_kill(small_data, tiny_assets, tmp_path, subprocess_env):
    out = tmp_path / "ablations"
    env = {**subprocess_env, "OMP_NUM_THREADS": "1"}
    # a first run, killed (SIGKILL: no clean-up) once the first arm-seed's result is written
    first = subprocess.Popen(_command(out, small_data, tiny_assets), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    done_untrained = out / "results" / "untrained" / "seed0.json"
    deadline = time.monotonic() + 240
    while not done_untrained.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done_untrained.is_file(), first.stderr.read() if first.poll() is not None else "timed out"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "results" / "step2_only" / "seed0.json").exists()  # killed before the second arm finished
    kept = done_untrained.stat().st_mtime_ns
    assert not list(out.rglob("*.tmp"))  # result files are written whole (temporary file + rename) or not at all

    # the same command again: the finished arm is kept (not re-evaluated), the other one trained and evaluated
    again = subprocess.run(_command(out, small_data, tiny_assets), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode in (0, 1), again.stderr[-2000:]
    assert "kept 1 finished arm-seed(s), computed 1" in again.stdout
    assert done_untrained.stat().st_mtime_ns == kept
    table = json.loads((out / "ablations.json").read_text())
    rows = {r["arm"]: r for r in table["rows"]}
    assert set(rows) == {"untrained", "step2_only"} and rows["step2_only"]["n_cases"] == 32
    # the trained arm is above the untrained one, by more than the (one-seed) spread: the ordering check holds
    assert rows["step2_only"]["accuracy_mean"] > rows["untrained"]["accuracy_mean"] + 0.1
    order = [c for c in table["checks"] if c["check"].startswith("step2_only > untrained")]
    assert order and order[0]["ok"]
    low, high = rows["step2_only"]["accuracy_ci95"]
    assert low <= rows["step2_only"]["accuracy_mean"] <= high
    assert table["baselines"]["n_test"] == 32 and 0 <= table["baselines"]["rgb_histogram_logreg"] <= 1
    assert (out / "ablations.png").stat().st_size > 1000 and "| `step2_only`" in (out / "ablations.md").read_text()
    stage = json.loads((out / "runs" / "seed0" / "step2_step2_only" / "stage.json").read_text())
    assert stage["status"] == "finished" and stage["steps"] == 60

    # a third run computes nothing
    third = subprocess.run(_command(out, small_data, tiny_assets), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert "kept 2 finished arm-seed(s), computed 0" in third.stdout, third.stderr[-2000:]


def test_bad_input_is_one_line(tmp_path):
    from skingpt4.ablations.__main__ import main

    assert main(["--out", str(tmp_path / "x"), "--step1-cfg", str(tmp_path / "missing.yaml")]) == 2
    assert main(["--out", str(tmp_path / "x"), "--per-class", "0"]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["--arms", "no_such_arm"])
    assert exit_.value.code == 2


def test_bootstrap_interval_and_ordering_checks():
    import numpy as np

    from skingpt4.ablations import ARMS
    from skingpt4.ablations.table import bootstrap_interval, summarise

    correct = np.array([[1, 0, 1, 1], [1, 1, 0, 1]], dtype=float)
    low, high = bootstrap_interval(correct)
    assert 0 <= low <= correct.mean() <= high <= 1
    assert bootstrap_interval(np.ones((3, 10))) == (1.0, 1.0)

    def result(accuracy, n=20):
        hits = [i < accuracy * n for i in range(n)]
        return {"cases": [str(i) for i in range(n)], "correct": hits, "differential_correct": hits,
                "diagnosis": {"accuracy": accuracy, "macro_f1": accuracy}}

    table = summarise({"step1_only": {0: result(0.3), 1: result(0.35)}, "untrained": {0: result(0.3), 1: result(0.0)}},
                      ARMS, None)
    check = table["checks"][0]
    assert check["check"].startswith("step1_only > untrained") and not check["ok"]  # the gap is within the spread


def test_a_stage_under_a_launcher_is_trained_once(small_data, tiny_assets, tmp_path, monkeypatch):
    """--launcher: a training stage runs as `<launcher> train.py --cfg-path <its resolved config>` (torchrun at full
    size; the plain interpreter here), is marked done, and is not trained again."""
    from skingpt4.ablations.arms import ARMS, Plan, stage_done, train_stage

    monkeypatch.setenv("SKINGPT4_SYNTHETIC_DATA", str(small_data))
    monkeypatch.setenv("SKINGPT4_TINY_ASSETS", str(tiny_assets))
    plan = Plan(REPO / "train_configs" / "main_job_step1.yaml", REPO / "train_configs" / "main_job_step2.yaml",
                ("run.max_epoch=1", "run.iters_per_epoch=10"), launcher=f"{sys.executable}")
    [(name, folder, cfg)] = plan.stage_configs(ARMS["step2_only"], 3, tmp_path)
    assert name == "step2_step2_only" and cfg.model.ckpt is None and cfg.run.seed == 3
    record = train_stage(plan, folder, cfg)
    assert record["status"] == "finished" and stage_done(folder, cfg) and (folder / "train.log").is_file()
    before = (folder / "checkpoint_last.pth").stat().st_mtime_ns
    assert train_stage(plan, folder, cfg) == record
    assert (folder / "checkpoint_last.pth").stat().st_mtime_ns == before
    [(_, _, no_notes)] = plan.stage_configs(ARMS["both_steps_no_notes"], 3, tmp_path)[1:]
    assert "skin_notes" not in no_notes.datasets and "dermnet" in no_notes.datasets


def test_the_ablation_recipe_lowers_only_the_step2_learning_rate(tmp_path):
    """The tiny ablation recipe: step 2 at a tenth of the main job's learning rate, step 1 as in the main job; the
    user's --step2-options come after it (and win); at full size the recipe is not applied."""
    from skingpt4.ablations import ARMS, Plan
    from skingpt4.ablations.__main__ import TINY, step2_recipe

    assert step2_recipe(False, ["run.max_epoch=1"]) == ("run.max_epoch=1",)
    for user, lr in (([], 1e-3), (["run.init_lr=5e-4"], 5e-4)):
        plan = Plan(REPO / TINY["step1"], REPO / TINY["step2"], step2_options=step2_recipe(True, user))
        (_, _, step1), (_, _, step2) = plan.stage_configs(ARMS["both_steps"], 0, tmp_path)
        assert step1.run.init_lr == 1e-2 and step2.run.init_lr == lr and step2.run.min_lr == 1e-4
