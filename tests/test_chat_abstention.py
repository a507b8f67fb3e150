"""Abstention that holds (docs/inference.md, "Differential"): uncalibrated output is labelled and always abstains;
non-finite scores are an error, never NaN probabilities; blank and noise photos abstain as out of distribution,
while held-out images of the world the calibration was fitted on mostly do not; the chat CLI's JSON says all
of it."""
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from calibration_helpers import blank_image, dermnet_folder, noise_image
from skingpt4.chat import ChatEngine
from skingpt4.chat.calibration_file import Calibration
from skingpt4.chat.cli import main
from skingpt4.chat.differential import (DifferentialScorer, ScoreError, calibration_path, class_answers,
                                        write_calibration)
from skingpt4.chat.ood import OODReference, image_features
from skingpt4.common.images import load_image
from skingpt4.models import build_model
from skingpt4.models.identity import model_identity
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

CFG = str(Path(__file__).resolve().parents[1] / "eval_configs" / "skingpt4_tiny.yaml")


@pytest.fixture(scope="module")
def model(tiny_assets):
    return build_model({"variant": "tiny", "ckpt": str(tiny_assets / "projection.pth")})


@pytest.fixture(scope="module")
def engine(model):
    return ChatEngine(model)


def embeds(engine, image):
    with torch.no_grad():
        return engine.model.encode_image(engine.image_processor(image).unsqueeze(0))


def calibration_for(model, reference_images, engine, temperature=1.0, abstain_below=0.0) -> Calibration:
    features = torch.cat([image_features(embeds(engine, image)) for image in reference_images])
    return Calibration(temperature, abstain_below, "none", CLINICAL_PROMPTS[0],
                       model_identity(model)["projection_sha256"], OODReference.fit(features), {"n": len(features)})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny world's drawings: 16 classes x 8 reference (validation) images and 16 x 2 held-out ones."""
    root = tmp_path_factory.mktemp("world")
    reference = sorted(dermnet_folder(root / "val", 8, seed=1, folders=16).rglob("*.jpg"))
    held_out = sorted(dermnet_folder(root / "test", 2, seed=2, folders=16).rglob("*.jpg"))
    return [load_image(p) for p in reference], [load_image(p) for p in held_out]


def test_uncalibrated_output_is_labelled_and_always_abstains(model, engine, world, monkeypatch):
    scorer = DifferentialScorer(model, class_answers())
    image = world[0][0]  # one of the calibration's own images: in distribution
    confident = torch.zeros(len(scorer.classes))
    confident[3] = 10.0  # the top class at 0.99: uncalibrated, it still abstains
    monkeypatch.setattr(scorer, "scores", lambda _: confident)
    result = scorer.assess(embeds(engine, image), None, image)
    assert result.ranked[0][1] > 0.99 and result.calibrated is False
    assert result.abstained and result.abstain_reason == "uncalibrated" and "not calibrated" in result.message
    record = result.as_json()
    assert record["calibrated"] is False and record["abstain_reason"] == "uncalibrated" and record["ood"] is None
    # calibrated, the same confident scores are answered
    calibrated = scorer.assess(embeds(engine, image), calibration_for(model, world[0], engine, abstain_below=0.5),
                               image)
    assert calibrated.calibrated and not calibrated.abstained and calibrated.abstain_reason is None
    assert calibrated.ood["check"] == "distance" and calibrated.ood["distance"] <= calibrated.ood["threshold"]


def test_non_finite_scores_are_an_error_not_nan_probabilities(tiny_assets, world):
    broken = build_model({"variant": "tiny", "ckpt": str(tiny_assets / "projection.pth")})
    with torch.no_grad():
        broken.llama_proj.weight[0, 0] = float("nan")  # as a diverged run would leave it
    engine = ChatEngine(broken)
    scorer = DifferentialScorer(broken, class_answers())
    with pytest.raises(ScoreError, match=r"non-finite class score\(s\) \(NaN or infinity\)"):
        scorer.assess(embeds(engine, world[1][0]), None, world[1][0])


def test_blank_and_noise_abstain_and_held_out_images_mostly_do_not(model, engine, world):
    reference, held_out = world
    calibration = calibration_for(model, reference, engine)  # abstain_below 0: only the image checks abstain
    scorer = DifferentialScorer(model, class_answers())

    def reasons(images, with_pixels=True):
        return [scorer.assess(embeds(engine, im), calibration, im if with_pixels else None) for im in images]

    blanks = [blank_image(c) for c in ((128, 128, 128), (236, 192, 158), (0, 0, 0), (255, 255, 255), (84, 52, 34))]
    noises = [noise_image(seed) for seed in range(10)]
    for result in reasons(blanks):
        assert result.abstained and result.abstain_reason == "out_of_distribution" and result.ood["check"] == "blank"
        assert "looks blank" in result.message
    for result in reasons(noises):
        assert result.abstained and result.abstain_reason == "out_of_distribution" and result.ood["check"] == "noise"
    kept = reasons(held_out)
    abstained = [r for r in kept if r.abstained]
    assert all(r.abstain_reason == "out_of_distribution" and r.ood["check"] == "distance" for r in abstained)
    assert len(abstained) <= 0.2 * len(kept), [r.ood for r in abstained]  # the 95th percentile: about 5-10%
    # without the photo (embeddings only) the distance alone still catches most noise and blank images
    by_distance = reasons(noises + blanks, with_pixels=False)
    outside = [r for r in by_distance if r.abstain_reason == "out_of_distribution"]
    assert all(r.ood["distance"] > r.ood["threshold"] for r in outside)
    # (the harder world's own images vary widely, so the distance alone lets some through: the pixel checks above
    # are what make every blank and noise photo abstain)
    assert len(outside) >= 0.6 * len(by_distance), [r.ood for r in by_distance]


# ---------------------------------------------------------------------------------------------- chat CLI
def run(argv):
    out = io.StringIO()
    return main(argv, stdin=io.StringIO(""), out=out), out.getvalue()


def test_cli_json_says_calibrated_and_why_it_abstains(tiny_assets, model, engine, world, tmp_path, capsys):
    ckpt = tmp_path / "projection.pth"
    shutil.copy(tiny_assets / "projection.pth", ckpt)
    write_calibration(ckpt, calibration_for(model, world[0], engine, abstain_below=0.0))
    photo, blank = tmp_path / "lesion.jpg", tmp_path / "blank.png"
    world[0][0].save(photo)  # a calibration image (saved again as JPEG): in distribution
    blank_image().save(blank)
    args = ["--cfg-path", CFG, "--clinical", "--format", "json", "--greedy", "--max-new-tokens", "4",
            "--options", f"model.ckpt={ckpt}"]
    code, out = run(args + ["--image", str(photo)])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out)
    assert record["calibrated"] is True and record["calibration_file"] == str(calibration_path(ckpt))
    assert record["ood"]["check"] == "distance" and record["abstained"] is False and record["abstain_reason"] is None
    code, out = run(args + ["--image", str(blank)])
    record = json.loads(out)
    assert record["abstained"] is True and record["abstain_reason"] == "out_of_distribution"
    assert record["ood"]["check"] == "blank" and "looks blank" in record["message"]

    calibration_path(ckpt).write_text('{"format": "skingpt4-calibration", "version": 2, "temperature": "0.05"}')
    capsys.readouterr()
    code, _ = run(args + ["--image", str(photo)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "Loading weights" not in err  # refused before the model loads
    assert err.splitlines()[-1].startswith("error: calibration file") and err.count("error:") == 1


def test_cli_refuses_a_checkpoint_with_nan_weights_in_one_line(tiny_assets, tmp_path, capsys):
    state = torch.load(tiny_assets / "projection.pth", weights_only=True)
    weights = state["model"] if "model" in state else state
    key = next(k for k in weights if k.endswith("bias"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    photo = tmp_path / "p.png"
    noise_image(0).save(photo)
    code, out = run(["--cfg-path", CFG, "--image", str(photo), "--clinical", "--format", "json",
                     "--options", f"model.ckpt={tmp_path / 'nan.pth'}"])
    err = capsys.readouterr().err
    assert code == 2 and out == "" and "Traceback" not in err and err.count("error:") == 1
    assert err.splitlines()[-1].startswith("error: config key 'model.ckpt':") and "holds non-finite weights" in err
