"""Step 2 on public data alone, end to end: the synthetic Dermnet folders, prepared with a class-stratified
validation split, trained with train_configs/tiny_step2_public.yaml (no doctors' notes). The validation loss is
logged after every epoch, and the loss curve is on disk while the run is still going."""
import json
import math

import pytest
from omegaconf import OmegaConf

import train as train_script
from data_prep.make_synthetic import make_synthetic
from data_prep.prepare_dermnet import prepare_dermnet
from skingpt4.runners import metrics as metrics_module
from training_helpers import REPO

PUBLIC = str(REPO / "train_configs" / "tiny_step2_public.yaml")


@pytest.fixture(scope="module")
def synthetic_public(tmp_path_factory):
    """The synthetic world's raw Dermnet folders, prepared as the config's header says (--val-fraction)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, per_class=4, test_per_class=1, skincon_images=4, ddi_images=2, notes_per_class=1,
                   skincon_test_images=1, size=64, prepare=False, log=lambda m: None)
    report = prepare_dermnet(root / "raw" / "dermnet", "train", root / "prepared" / "public" / "dermnet",
                             val_fraction=0.25, log=lambda m: None)
    assert report["written"] == 16 * 3 and report["validation"]["written"] == 16  # 1 of every class's 4
    return root


def test_public_step2_trains_without_notes_with_a_validation_loss(synthetic_public, tiny_assets, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv("SKINGPT4_SYNTHETIC_DATA", str(synthetic_public))
    assert not (synthetic_public / "prepared" / "notes").exists()  # there are no notes to read
    snapshots = []  # the curve files as a watcher would see them, each time the run rewrites them
    real_update = metrics_module.MetricsLog.update_curve

    def watched(self, draw_png=False):
        path = real_update(self, draw_png)
        snapshots.append((json.loads(self.curve_json.read_text()), path is not None and path.exists()))
        return path

    monkeypatch.setattr(metrics_module.MetricsLog, "update_curve", watched)
    out = tmp_path / "run"
    status = train_script.main(["--cfg-path", PUBLIC, "--options", "model.ckpt=null", "run.max_epoch=2",
                                "run.iters_per_epoch=4", "run.log_freq=2", "run.warmup_steps=2",
                                "run.progress_bar=false", f"run.output_dir={out}"])
    assert status == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    validation = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in train_records] == [2, 4, 6, 8]
    assert [(r["step"], r["epoch"], r["val_items"]) for r in validation] == [(4, 1, 16), (8, 2, 16)]
    assert all(math.isfinite(r["val_loss"]) and r["val_loss"] > 0 for r in validation)
    assert set(validation[0]["val_loss_by_source"]) == {"dermnet_val"}
    assert validation[1]["val_loss"] != validation[0]["val_loss"]  # the weights moved between the epochs
    assert all(set(r["bad_samples"]) == {"dermnet"} for r in train_records)  # the one training source
    config = OmegaConf.to_container(OmegaConf.load(out / "config.yaml"))
    assert config["datasets"]["skin_notes"] is None and list(config["validation"]) == ["dermnet_val"]
    # Mid-run: after epoch 1's validation the curve on disk already holds it, the PNG exists, and steps follow.
    mid = next(curve for curve, png in snapshots if curve["validation"] and png)
    assert [r["step"] for r in mid["train"]] == [2, 4] and mid["validation"][0]["step"] == 4
    final = json.loads((out / "loss_curve.json").read_text())
    assert [r["step"] for r in final["train"]] == [2, 4, 6, 8]
    assert [r["val_loss"] for r in final["validation"]] == [r["val_loss"] for r in validation]
    assert (out / "loss_curve.png").stat().st_size > 0


def test_notes_can_be_dropped_from_any_step2_config(synthetic_public, tiny_assets, tmp_path, monkeypatch, capsys):
    """The documented override on the notes config itself: datasets.skin_notes=null (its folder does not exist)."""
    monkeypatch.setenv("SKINGPT4_SYNTHETIC_DATA", str(synthetic_public))
    step2 = str(REPO / "train_configs" / "tiny_step2.yaml")
    common = ["model.ckpt=null", "run.max_epoch=1", "run.iters_per_epoch=2", "run.log_freq=1", "run.progress_bar=false",
              f"datasets.dermnet.storage={synthetic_public / 'prepared' / 'public' / 'dermnet'}"]
    assert train_script.main(["--cfg-path", step2, "--options", *common, f"run.output_dir={tmp_path / 'a'}"]) == 2
    assert "datasets.skin_notes.storage" in capsys.readouterr().err  # without the override: the missing notes
    for drop in ("datasets.skin_notes=null", "datasets.skin_notes.sample_ratio=0"):
        out = tmp_path / drop.split("=")[0].replace(".", "_")
        assert train_script.main(["--cfg-path", step2, "--options", *common, drop, f"run.output_dir={out}"]) == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2] and all(set(r["bad_samples"]) == {"dermnet"} for r in records)
