"""Shared fixtures. Every test runs with network access blocked (loopback allowed), in this process and in the
subprocesses started with the `subprocess_env` fixture."""
import os
import sys
from pathlib import Path

import pytest

NETGUARD_DIR = Path(__file__).parent / "netguard"
sys.path.insert(0, str(NETGUARD_DIR))
import sitecustomize as netguard  # noqa: E402  (installs the guard on import)

assert netguard  # the import is the point
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # Tiny models on a 2-core CI machine: one intra-op thread is several times faster than two fighting over
    # the cores with the subprocesses some tests start (servers, training workers).
    import torch

    torch.set_num_threads(1)


def _cache_dir() -> Path:
    """Where the tests keep what is slow to build and safe to reuse (keyed by a fingerprint of its recipe)."""
    root = os.environ.get("SKINGPT4_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "skingpt4-tests")
    return Path(root)


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """Tiny pretrained assets in the real file formats, the test suite's smaller recipe of the tiny world
    (skingpt4/tiny/assets.py, `TinyRecipe.small`): built once into the test cache (about 40 s on 2 cores) and
    reused while the recipe's fingerprint is unchanged; each session works on its own copy (a few MB)."""
    import shutil

    from skingpt4.tiny.assets import TinyRecipe, build_tiny_assets, fingerprint

    recipe = TinyRecipe.small()  # one folder per fingerprint: checkouts of other versions never replace this one
    cached = build_tiny_assets(_cache_dir() / f"tiny_assets_small-{fingerprint(recipe)[:12]}", recipe=recipe)
    path = tmp_path_factory.mktemp("tiny") / "tiny_assets"
    shutil.copytree(cached, path)
    os.environ["SKINGPT4_TINY_ASSETS"] = str(path)
    # The tiny chat/eval configs load the main job's trained projection; plumbing tests use the untrained one.
    os.environ["SKINGPT4_TINY_CKPT"] = str(path / "projection.pth")
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_assets):
    """A built tiny SkinGPT-4 on CPU, fp32, Vicuna-v0 template, step-2 prompts. Shared: do not modify it."""
    import torch

    from skingpt4.models import build_model

    torch.manual_seed(0)
    return build_model({"variant": "tiny"})


@pytest.fixture(scope="session")
def tiny_export(tiny_assets, tmp_path_factory) -> Path:
    """The tiny chat model (eval_configs/skingpt4_tiny.yaml: fixed projection) exported as a transformers BLIP-2
    directory by `python -m skingpt4.export` (built once per test session)."""
    from skingpt4.export.cli import main as export_main

    out = tmp_path_factory.mktemp("export") / "blip2"
    assert export_main(["--cfg-path", str(REPO_ROOT / "eval_configs" / "skingpt4_tiny.yaml"), "--out", str(out)]) == 0
    return out


@pytest.fixture
def subprocess_env(tiny_assets) -> dict:
    """Environment for subprocesses: network guard on, offline, tiny assets found, repo importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(NETGUARD_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["SKINGPT4_TINY_ASSETS"] = str(tiny_assets)
    env["SKINGPT4_TINY_CKPT"] = str(tiny_assets / "projection.pth")
    # One intra-op thread, as in this process (pytest_configure): results compared bit for bit across processes
    # (kill-and-resume) then use the same float reduction order whatever the machine's core count.
    env["OMP_NUM_THREADS"] = "1"
    return env


# ---- training tests (tests/test_train_*.py): small prepared folders, written directly (no generator run) ----
@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    """Prepared folders (filter_cap.json + image/) in the formats the dataset builders read: `skincon` (with
    `concepts`), `dermnet` (with `label`), `notes`, and `same_caption` (one caption for all, so every sample has
    the same number of answer tokens). Each lesion colour goes with one caption, so there is something to learn."""
    import json

    from PIL import Image

    root = tmp_path_factory.mktemp("train_data")
    colours = [(200, 30, 30), (30, 150, 40), (30, 60, 200), (235, 205, 20)]
    captions = ["This lesion shows plaque and scale.", "This lesion shows papule.",
                "This lesion shows erythema, crust and erosion.", "This lesion shows a nodule."]
    for name, extra in (("skincon", "concepts"), ("dermnet", "label"), ("notes", None), ("same_caption", None)):
        (root / name / "image").mkdir(parents=True)
        records = []
        for i in range(16):
            kind = i % len(colours)
            image = Image.new("RGB", (64, 64), (236, 192, 158))
            image.paste(colours[kind], (16 + i % 5, 16, 44, 44 + i % 7))
            image.save(root / name / "image" / f"{name}_{i:02d}.jpg")
            record = {"image_id": f"{name}_{i:02d}",
                      "caption": captions[0] if name == "same_caption" else captions[kind]}
            if extra:
                record[extra] = [captions[kind]] if extra == "concepts" else f"class {kind}"
            records.append(record)
        (root / name / "filter_cap.json").write_text(json.dumps({"annotations": records}))
    return root


@pytest.fixture
def kill_train_after_checkpoint(subprocess_env):
    """kill(cfg_path, options, output_dir, min_step) starts `python train.py`, SIGKILLs it (no handler runs: only
    what is on disk survives) once output_dir/checkpoint_last.pth holds at least `min_step` steps, and returns
    the step of that checkpoint."""
    import signal
    import subprocess
    import time

    from skingpt4.models.checkpoints import read_checkpoint as load_checkpoint

    def kill(cfg_path, options, output_dir, min_step: int) -> int:
        proc = subprocess.Popen([sys.executable, "train.py", "--cfg-path", str(cfg_path), "--options", *options],
                                cwd=REPO_ROOT, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        last = Path(output_dir) / "checkpoint_last.pth"
        deadline = time.time() + 120
        try:
            while time.time() < deadline and proc.poll() is None:
                if last.exists() and load_checkpoint(last)["step"] >= min_step:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        return load_checkpoint(last)["step"]

    return kill
# ---- end of training fixtures ----
