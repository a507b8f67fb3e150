"""The calibrated differential (docs/evaluation.md, "Differential"): the batched class scores equal scoring each class
in its own plain forward pass; temperature fitting recovers a known temperature; ECE and Brier equal hand-computed
values; the calibrate and differential tasks write and use the calibration next to the checkpoint."""
import csv
import json
import math
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from skingpt4.chat import ChatEngine
from skingpt4.common.config import ConfigError
from skingpt4.evaluation import calibration as cal
from skingpt4.evaluation import tasks
from skingpt4.chat.differential import (ClassAnswer, DifferentialScorer, calibration_path, class_answers,
                                        probabilities, reference_scores)
from skingpt4.models import build_model
from calibration_helpers import dermnet_folder


def sharpened(template: str):
    """The tiny model with its LLM's matrices redrawn at std 0.2, so the classes' scores really differ."""
    torch.manual_seed(0)
    model = build_model({"variant": "tiny", "template": template})
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.llm.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model


@pytest.mark.parametrize("template,length_norm", [("vicuna_v0", "none"), ("llama2_chat", "none"),
                                                  ("vicuna_v0", "mean")])
def test_batched_scores_equal_one_plain_forward_pass_per_class(tiny_assets, template, length_norm):
    model = sharpened(template)
    answers = class_answers()
    assert len(answers) == 16 and answers[0] == ClassAnswer("Acne and rosacea", "This looks like acne or rosacea.")
    scorer = DifferentialScorer(model, answers, length_norm=length_norm)
    image_embeds = model.encode_image(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2)))
    batched = scorer.scores(image_embeds)
    reference = torch.tensor(reference_scores(model, image_embeds, scorer.question, answers, length_norm))
    # 1e-5 per answer token: a summed score adds up its tokens' float32 rounding
    per_token = torch.tensor([1.0 if length_norm == "mean" else len(ids) for ids in scorer.answer_ids])
    assert ((batched - reference).abs() <= 1e-5 * per_token).all(), (batched - reference).abs().max()
    assert batched.std() > 0.05  # the classes are told apart, so the equality means something
    temperature = 0.1 if length_norm == "mean" else 10.0  # no probability underflows to a tie
    result = scorer.differential(image_embeds, temperature=temperature, abstain_below=0.99)
    assert [c for c, _ in result.ranked] == [answers[i].name for i in torch.argsort(batched, descending=True)]
    assert math.isclose(sum(p for _, p in result.ranked), 1.0, rel_tol=1e-9)
    assert result.abstained == (result.ranked[0][1] < 0.99)
    top = result.ranked[0][1]  # just above the top probability: the scorer abstains
    assert scorer.differential(image_embeds, temperature=temperature, abstain_below=(1 + top) / 2).abstained
    assert result.as_json()["differential"][0]["class"] == result.top


def test_temperature_fitting_recovers_a_known_temperature():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(6000, 16, generator=generator, dtype=torch.float64) * 3
    labels = torch.multinomial(torch.softmax(scores / 2.5, dim=-1), 1, generator=generator)[:, 0]
    fitted = cal.fit_temperature(scores, labels)
    assert abs(fitted - 2.5) < 0.1, fitted
    assert cal.nll(scores, labels, fitted) <= min(cal.nll(scores, labels, t) for t in (1.0, 2.0, 3.0))


def test_ece_brier_and_coverage_equal_hand_computed_values():
    probs = torch.tensor([[0.9, 0.1], [0.62, 0.38], [0.55, 0.45], [0.2, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    # top-1 confidences 0.9 (right), 0.62 (wrong), 0.55 (right), 0.8 (right), each alone in its 1/15-wide bin
    assert math.isclose(cal.expected_calibration_error(probs, labels), (0.1 + 0.62 + 0.45 + 0.2) / 4)
    assert math.isclose(cal.brier_score(probs, labels), (0.02 + 2 * 0.62 ** 2 + 2 * 0.45 ** 2 + 0.08) / 4)
    assert cal.top_k_accuracy(probs, labels, 1) == 0.75 and cal.top_k_accuracy(probs, labels, 3) == 1.0
    at = {round(r["threshold"], 2): r for r in cal.coverage_accuracy(probs, labels)}
    assert at[0.0]["coverage"] == 1.0 and at[0.0]["accuracy"] == 0.75
    assert at[0.6]["coverage"] == 0.75 and math.isclose(at[0.6]["accuracy"], 2 / 3)
    assert at[0.85]["coverage"] == 0.25 and at[0.85]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        probabilities(probs, 0.0)


def test_an_unknown_length_norm_is_named(tiny_model):
    with pytest.raises(ConfigError, match=r"evaluation.differential.length_norm=median: choose one of none, mean"):
        DifferentialScorer(tiny_model, class_answers(), length_norm="median")


@pytest.fixture(scope="module")
def labelled_cases(tmp_path_factory):
    """A Dermnet-layout folder (folder names give the labels): 4 classes x 2 images of distinct colours."""
    root = tmp_path_factory.mktemp("cases")
    folders = {"Acne and Rosacea Photos": (200, 40, 40), "Eczema Photos": (40, 160, 60),
               "Vascular Tumors": (40, 60, 200), "Urticaria Hives": (230, 200, 30)}
    for folder, colour in folders.items():
        (root / folder).mkdir()
        for i in range(2):
            img = Image.new("RGB", (64, 64), (236, 192, 158))
            img.paste(colour, (10 + 4 * i, 12, 50, 52))
            img.save(root / folder / f"case-{i}.jpg")
    return root


@pytest.fixture(scope="module")
def synthetic_cases(tmp_path_factory):
    """Validation and test folders of the tiny world's drawings: 8 classes x 4 images each."""
    root = tmp_path_factory.mktemp("synthetic")
    return dermnet_folder(root / "val", 4, seed=1), dermnet_folder(root / "test", 4, seed=2)


def test_calibrate_then_differential_tasks(tiny_assets, synthetic_cases, labelled_cases, tmp_path):
    validation, test = synthetic_cases
    ckpt = tmp_path / "projection.pth"
    shutil.copy(tiny_assets / "projection.pth", ckpt)
    cfg = OmegaConf.create({"model": {"variant": "tiny", "ckpt": str(ckpt)},
                            "evaluation": {"cases": str(test),
                                           "differential": {"validation_cases": str(validation),
                                                            "abstain_below": 0.2}}})
    engine = ChatEngine(build_model(cfg.model))
    fitted = tasks.TASKS["calibrate"].run(tasks.EvalContext(cfg, tmp_path / "cal", chat=engine))
    record = json.loads(calibration_path(ckpt).read_text())
    assert record["format"] == "skingpt4-calibration" and record["version"] == 2
    assert record["temperature"] == fitted["temperature"] and 1e-3 * 1.01 < record["temperature"] < 1e3 / 1.01
    assert record["n"] == 32 and len(record["ood"]["features"]) == 32 and record["ood"]["threshold"] > 0
    assert record["nll_after"] <= record["nll_before"] + 1e-12  # the fit never does worse on what it was fitted on

    summary = tasks.TASKS["differential"].run(tasks.EvalContext(cfg, tmp_path / "diff", chat=engine))
    assert summary["temperature"] == record["temperature"] and summary["after"]["n"] == 32
    assert summary["calibrated"] is True and summary["ood_threshold"] == record["ood"]["threshold"]
    assert {"top1", "top3", "ece", "brier"} <= set(summary["before"]) and len(summary["coverage_accuracy"]) == 20
    for name in ("differential.csv", "reliability.png", "coverage_accuracy.png", "summary.json"):
        assert (tmp_path / "diff" / name).is_file(), name
    rows = list(csv.DictReader((tmp_path / "diff" / "differential.csv").open()))
    assert {r["abstain_reason"] for r in rows} <= {"", "out_of_distribution", "low_confidence"}
    assert all(float(r["ood_distance"]) >= 0 for r in rows)

    # 8 cases, and a temperature the search ran into: refused, and the good file is left as it was
    bad = OmegaConf.merge(cfg, {"evaluation": {"differential": {"validation_cases": str(labelled_cases)}}})
    with pytest.raises(cal.CalibrationRefused, match=r"calibration not saved .*only 8 validation case\(s\)"):
        tasks.TASKS["calibrate"].run(tasks.EvalContext(bad, tmp_path / "cal2", chat=engine))
    assert json.loads(calibration_path(ckpt).read_text()) == record

    with torch.no_grad():  # another projection: the calibration no longer belongs to it
        engine.model.llama_proj.bias.add_(1.0)
    with pytest.raises(ConfigError, match="was fitted for another projection"):
        tasks.TASKS["differential"].run(tasks.EvalContext(cfg, tmp_path / "again", chat=engine))


def test_calibrate_needs_a_checkpoint_and_a_validation_split(tiny_model, labelled_cases, tmp_path):
    cfg = OmegaConf.create({"model": {"variant": "tiny"}, "evaluation": {"cases": str(labelled_cases)}})
    with pytest.raises(ConfigError, match="written next to the projection checkpoint: set model.ckpt"):
        tasks.TASKS["calibrate"].run(tasks.EvalContext(cfg, tmp_path, chat=ChatEngine(tiny_model)))
