"""Calibration that cannot be switched off by a bad file or a bad fit: the calibration file is read strictly (every
fault one line naming the file and the field), a fit that ran into its search bound, a perfectly separated or a
too small validation split is refused, and non-finite weights are refused at checkpoint load."""
import json
import math
import os
import re
import shutil

import pytest
import torch

from skingpt4.chat.calibration_file import (MAX_BYTES, Calibration, CalibrationError, parse_calibration,
                                            read_calibration_file, write_calibration_file)
from skingpt4.chat.differential import calibration_path, load_calibration
from skingpt4.chat.ood import OODReference
from skingpt4.evaluation import calibration as cal
from skingpt4.models import build_model
from skingpt4.models.checkpoints import CheckpointError

SHA = "ab" * 32


def good_calibration() -> Calibration:
    features = torch.nn.functional.normalize(torch.randn(6, 256, generator=torch.Generator().manual_seed(0)), dim=-1)
    return Calibration(1.7, 0.5, "none", "Could you describe the skin disease in this image for me?", SHA,
                       OODReference.fit(features), {"n": 6, "fitted_on": "val", "before": {"ece": 0.3}})


@pytest.fixture
def good_file(tmp_path):
    return write_calibration_file(tmp_path / "proj.calibration.json", good_calibration())


def edited(path, change) -> str:
    record = json.loads(path.read_text())
    change(record)
    return json.dumps(record)


def test_a_written_calibration_reads_back(good_file):
    read = read_calibration_file(good_file)
    original = good_calibration()
    assert (read.temperature, read.abstain_below, read.length_norm, read.projection_sha256) == (1.7, 0.5, "none", SHA)
    assert torch.allclose(read.ood.features, original.ood.features, atol=1e-5)
    assert math.isclose(read.ood.threshold, original.ood.threshold) and read.information["n"] == 6


def _set(key, value):
    return lambda r: r.__setitem__(key, value)


BAD_FIELDS = [  # (edit, the field named, words of the reason)
    (_set("temperature", "0.05"), "temperature", '"0.05" (a string)'),
    (_set("temperature", None), "temperature", "got null"),
    (_set("temperature", True), "temperature", "(a boolean)"),
    (_set("temperature", -1), "temperature", "got -1"),
    (_set("temperature", 0), "temperature", "got 0"),
    (_set("temperature", 1e6), "temperature", "in (0.001, 1000)"),
    (_set("abstain_below", None), "abstain_below", "got null"),
    (_set("abstain_below", -1), "abstain_below", "in [0, 1], got -1"),
    (_set("abstain_below", 1.5), "abstain_below", "got 1.5"),
    (_set("abstain_below", "0.5"), "abstain_below", "(a string)"),
    (_set("length_norm", "median"), "length_norm", "one of none, mean"),
    (_set("projection_sha256", "abc"), "projection_sha256", "64 lowercase hex digits"),
    (_set("question", ""), "question", "the diagnosis question"),
    (lambda r: r.pop("abstain_below"), "abstain_below", "is missing"),
    (_set("surprise", 1), "surprise", "not a calibration field"),
    (_set("version", 1), "version", "must be 2, got 1"),
    (lambda r: r.pop("format"), "format", "older version"),
    (_set("n", "many"), "n", "must be a int"),
    (lambda r: r["ood"].__setitem__("threshold", "far"), "ood.threshold", "(a string)"),
    (lambda r: r["ood"].__setitem__("features", [[0.1] * 256]), "ood.features", "at least 2"),
    (lambda r: r["ood"]["features"][1].pop(), "ood.features[1]", "must list 256 numbers, got 255"),
    (lambda r: r["ood"]["features"][2].__setitem__(0, "x"), "ood.features[2]", "not a number"),
]


@pytest.mark.parametrize("change,field,reason", BAD_FIELDS, ids=[f"{b[1]}:{b[2][:12]}" for b in BAD_FIELDS])
def test_every_bad_field_is_one_line_naming_file_and_field(good_file, change, field, reason):
    good_file.write_text(edited(good_file, change))
    with pytest.raises(CalibrationError) as err:
        read_calibration_file(good_file)
    message = str(err.value)
    assert "\n" not in message and f"'{good_file}'" in message and f"field '{field}'" in message, message
    assert reason in message, message


@pytest.mark.parametrize("key,text,reason", [
    ("temperature", "NaN", "NaN (not a finite number)"),
    ("temperature", "Infinity", "Infinity (not a finite number)"),
    ("temperature", "1e999", "1e999 (not a finite number)"),
    ("abstain_below", "NaN", "NaN (not a finite number)"),
    ("abstain_below", "-Infinity", "-Infinity (not a finite number)"),
])
def test_nan_and_infinity_are_refused_naming_the_field(good_file, key, text, reason):
    record = json.loads(good_file.read_text())
    record[key] = "@@"
    good_file.write_text(json.dumps(record).replace('"@@"', text))
    with pytest.raises(CalibrationError, match=rf"field '{key}' must be a finite number .*got {re.escape(reason)}"):
        read_calibration_file(good_file)


def test_non_finite_inside_the_reference_features_is_refused(good_file):
    text = good_file.read_text()
    record = json.loads(text)
    first = json.dumps(record["ood"]["features"][0][0])
    good_file.write_text(text.replace(first, "NaN", 1))
    with pytest.raises(CalibrationError, match=r"field 'ood.features\[0\]' holds NaN"):
        read_calibration_file(good_file)


@pytest.mark.parametrize("content,reason", [
    (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "is not UTF-8 text"),
    (b"temperature: 1.5", "is not JSON (Expecting value at line 1, column 1)"),
    (b"", "is not JSON"),
    (b"[1.5, 0.5]", "must hold a JSON object, not a JSON array"),
    (b'{"format": "skingpt4-calibration", "version": 2, "before": {"a": {"b": {"c": {"d": {"e": 1}}}}}}',
     "nested deeper than 5 levels"),
    (b"[" * 200_000 + b"]" * 200_000, "nested deeper than 5 levels"),
])
def test_garbage_and_deep_nesting_are_one_line(tmp_path, content, reason):
    path = tmp_path / "x.calibration.json"
    path.write_bytes(content)
    with pytest.raises(CalibrationError) as err:
        read_calibration_file(path)
    assert reason in str(err.value) and "\n" not in str(err.value) and f"'{path}'" in str(err.value)


def test_oversize_and_non_regular_files_are_refused_without_reading(tmp_path):
    big = tmp_path / "big.calibration.json"
    with open(big, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: nothing is written, and nothing must be read
    with pytest.raises(CalibrationError, match=rf"is {MAX_BYTES + 1} bytes, more than the {MAX_BYTES}"):
        read_calibration_file(big)
    folder = tmp_path / "dir.calibration.json"
    folder.mkdir()
    with pytest.raises(CalibrationError, match="is not a regular file"):
        read_calibration_file(folder)
    fifo = tmp_path / "fifo.calibration.json"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(CalibrationError, match="is not a regular file"):
        read_calibration_file(fifo)


def test_writing_refuses_what_the_reader_would_refuse(tmp_path):
    bad = Calibration(float("nan"), 0.5, "none", "q", SHA, good_calibration().ood)
    with pytest.raises(CalibrationError, match="non-finite"):
        write_calibration_file(tmp_path / "c.json", bad)
    wrong = Calibration(1.0, 2.0, "none", "q", SHA, good_calibration().ood)
    with pytest.raises(CalibrationError, match="field 'abstain_below'"):
        write_calibration_file(tmp_path / "c.json", wrong)
    assert not (tmp_path / "c.json").exists()
    with pytest.raises(CalibrationError, match=r"'<text>': field 'abstain_below' is missing"):
        parse_calibration('{"format": "skingpt4-calibration", "version": 2, "temperature": "1"}')


def test_a_broken_file_next_to_the_checkpoint_stops_loading(tiny_assets, tmp_path):
    ckpt = tmp_path / "p.pth"
    shutil.copy(tiny_assets / "projection.pth", ckpt)
    model = build_model({"variant": "tiny", "ckpt": str(ckpt)})
    assert load_calibration(ckpt, model) is None  # none there: uncalibrated, not an error
    calibration_path(ckpt).write_text('{"temperature": "0.05"}')
    with pytest.raises(CalibrationError, match="field 'format'"):
        load_calibration(ckpt, model)
    calibration_path(ckpt).unlink()
    calibration_path(ckpt).symlink_to(tmp_path / "missing.json")  # a dangling link is not "no file"
    with pytest.raises(CalibrationError, match="cannot be read"):
        load_calibration(ckpt, model)


# ---------------------------------------------------------------------------------------------- the fit
def test_fits_that_would_mislead_are_refused():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 16
    scores = torch.randn(40, 16, generator=generator, dtype=torch.float64)
    noisy = cal.fit_temperature(scores, labels)
    # scores unrelated to the labels: the best T is "infinitely flat", i.e. the upper bound
    assert any("at the search bound" in p for p in cal.fit_problems(scores, labels, noisy)), noisy
    separated = scores.clone()
    separated[torch.arange(40), labels] += 10  # every case's true class scores highest
    t = cal.fit_temperature(separated, labels)
    problems = cal.fit_problems(separated, labels, t)
    assert math.isclose(t, 1e-3, rel_tol=0.01), t
    assert any("perfectly separated (all 40 cases'" in p for p in problems)
    assert any("at the search bound" in p for p in problems)
    informative = scores + 3 * torch.nn.functional.one_hot(labels, 16)
    informative[0] = torch.roll(informative[0], 1)  # one case wrong: not separated
    t = cal.fit_temperature(informative, labels)
    assert cal.fit_problems(informative, labels, t) == [], t
    assert cal.fit_problems(informative[:10], labels[:10], t) == [
        "only 10 validation case(s); at least 20 are needed for a stable temperature"]
    assert cal.fit_problems(informative, labels, 1e3 / 1.005) and cal.fit_problems(informative, labels, 1.005e-3)


# ---------------------------------------------------------------------------------------------- weights
def test_non_finite_weights_are_refused_at_load(tiny_assets, tmp_path):
    state = torch.load(tiny_assets / "projection.pth", weights_only=True)
    weights = state["model"] if "model" in state else state
    key = next(k for k in weights if k.endswith("weight"))
    weights[key] = weights[key].clone()
    weights[key][0, :3] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as err:
        build_model({"variant": "tiny", "ckpt": str(bad)})
    message = str(err.value)
    assert "\n" not in message and f"'{bad}' holds non-finite weights (NaN or infinity) in '{key}' (3 of" in message
    assert message.startswith("config key 'model.ckpt'")

    from skingpt4.models.loading import load_projection

    model = build_model({"variant": "tiny", "ckpt": str(tiny_assets / "projection.pth")})
    before = model.llama_proj.weight.clone()
    with pytest.raises(CheckpointError, match="holds non-finite weights"):
        load_projection(model, str(bad))
    assert torch.equal(model.llama_proj.weight, before)  # the refused weights did not stay in the model


def test_evaluate_py_reports_a_refused_fit_in_one_line_and_writes_nothing(tiny_assets, tmp_path, capsys):
    from PIL import Image

    from evaluate import main as evaluate_main

    for folder in ("Eczema Photos", "Urticaria Hives"):
        (tmp_path / "val" / folder).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (200, 40 * i, 60)).save(tmp_path / "val" / folder / f"{i}.jpg")
    ckpt = tmp_path / "p.pth"
    shutil.copy(tiny_assets / "projection.pth", ckpt)
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {{variant: tiny, ckpt: {ckpt}}}\nevaluation:\n  cases: {tmp_path / 'val'}\n"
                      f"  differential: {{validation_cases: {tmp_path / 'val'}}}\n")
    code = evaluate_main(["--cfg-path", str(config), "--task", "calibrate", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: calibration not saved (fitted on") and \
        "only 6 validation case(s); at least 20 are needed" in err.splitlines()[-1]
    assert not calibration_path(ckpt).exists()
