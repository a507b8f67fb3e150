"""Consistency ratio, diagnosis metrics, concept recall and latency statistics against hand computations."""
import math

import pytest

from skingpt4.evaluation import consistency, metrics
from skingpt4.evaluation.extract import UNKNOWN, ClassExtractor
from skingpt4.evaluation.latency import latency_stats


def test_consistency_on_a_fixed_set_of_answers(tmp_path):
    extractor = ClassExtractor()
    answers = {
        # 4 of 5 runs say psoriasis (one says "not psoriasis ... eczema")
        "a": ["Psoriasis.", "This is psoriasis.", "Plaque psoriasis.", "Not psoriasis; eczema.", "psoriasis"],
        # 2 melanoma, 2 nevus (same class), 1 unknown -> 4/5
        "b": ["melanoma", "a nevus", "melanoma", "a benign mole", "I cannot tell."],
        # tie 2 eczema / 2 tinea / 1 acne: the label seen first (eczema) is the majority -> 2/5
        "c": ["eczema", "tinea", "tinea", "eczema", "acne"],
    }
    cases = consistency.from_answers(answers, lambda text: extractor.extract(text).label)
    by_id = {c.case_id: c for c in cases}
    assert (by_id["a"].majority, by_id["a"].agree) == ("Psoriasis and lichen planus", 4)
    assert (by_id["b"].majority, by_id["b"].agree, by_id["b"].unknown) == ("Melanoma skin cancer, nevi, moles", 4, 1)
    assert (by_id["c"].majority, by_id["c"].agree) == ("Dermatitis", 2)
    summary = consistency.summarize(cases)
    assert summary["consistency_ratio"] == pytest.approx((4 + 4 + 2) / 15)
    assert summary["unknown_rate"] == pytest.approx(1 / 15)
    assert by_id["a"].same_text == pytest.approx(1 / 5)  # every text differs: the first one counts once
    files = consistency.write(cases, tmp_path)
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
    assert files["per_case_csv"].read_text().splitlines()[1].startswith("a,5,Psoriasis and lichen planus,4,0.8,0,0.2,")


def test_consistency_unequal_runs_pools_runs():
    cases = [consistency.case_consistency("x", ["A", "A", "B"], ["1", "1", "2"]),
             consistency.case_consistency("y", ["C"], ["3"])]
    s = consistency.summarize(cases)
    assert s["consistency_ratio"] == pytest.approx(3 / 4)           # pooled over runs
    assert s["mean_case_ratio"] == pytest.approx((2 / 3 + 1) / 2)  # mean of per-case ratios
    assert s["same_text_ratio"] == pytest.approx(3 / 4)


def test_diagnosis_metrics_hand_computed(tmp_path):
    classes = ["A", "B", "C"]
    y_true = ["A", "A", "A", "B", "B", "C"]
    y_pred = ["A", "A", "B", "B", UNKNOWN, "A"]
    m = metrics.diagnosis_metrics(y_true, y_pred, classes)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["unknown_rate"] == pytest.approx(1 / 6)
    rows = {r["class"]: r for r in m["per_class"]}
    # A: TP 2, predicted 3, support 3 -> P 2/3, R 2/3, F1 2/3
    assert (rows["A"]["precision"], rows["A"]["recall"], rows["A"]["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # B: TP 1, predicted 2, support 2 -> 0.5, 0.5, 0.5 ; C: TP 0, never predicted -> 0, 0, 0
    assert (rows["B"]["precision"], rows["B"]["recall"], rows["B"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (rows["C"]["precision"], rows["C"]["recall"], rows["C"]["f1"]) == (0.0, 0.0, 0.0)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert m["confusion"]["columns"] == ["A", "B", "C", UNKNOWN]
    assert m["confusion"]["counts"] == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]]
    assert metrics.plot_confusion(m["confusion"], tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_diagnosis_metrics_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"ground-truth labels \['Z'\] are not among the classes"):
        metrics.diagnosis_metrics(["Z"], ["A"], ["A"])


def test_stratified_by_skin_type():
    groups = ["I", "I", "VI", "VI", None]
    out = metrics.stratified(["A", "B", "A", "B", "A"], ["A", "B", "A", UNKNOWN, "B"], groups, ["A", "B"])
    assert [(g["group"], g["n"], g["accuracy"], g["unknown_rate"]) for g in out] == [("I", 2, 1.0, 0.0), ("VI", 2, 0.5, 0.5)]


def test_concept_recall_hand_computed():
    truth = [["Erythema", "Scale", "Plaque"], ["Papule"], []]
    said = [["Erythema", "Plaque", "Ulcer"], [], ["Scale"]]
    r = metrics.concept_recall(truth, said)
    assert r["images"] == 2
    assert r["micro_recall"] == pytest.approx(2 / 4)
    assert r["macro_recall"] == pytest.approx((2 / 3 + 0) / 2)
    assert {c["concept"]: c["recall"] for c in r["per_concept"]} == {"Erythema": 1.0, "Papule": 0.0, "Plaque": 1.0, "Scale": 0.0}


def test_latency_stats_hand_computed():
    s = latency_stats([4.0, 1.0, 3.0, 2.0, 10.0])
    # sorted 1,2,3,4,10: median 3; linear quartiles at positions 1 and 3 -> 2 and 4
    assert (s["n"], s["median"], s["q1"], s["q3"], s["iqr"], s["mean"]) == (5, 3.0, 2.0, 4.0, 2.0, 4.0)
    with pytest.raises(ValueError, match="no timings"):
        latency_stats([])
    assert math.isnan(consistency.summarize([])["consistency_ratio"])


def test_image_control_donors_are_other_cases_of_other_classes():
    from pathlib import Path

    from skingpt4.common.config import ConfigError
    from skingpt4.evaluation.cases import Case
    from skingpt4.evaluation.image_control import donors

    cases = [Case(f"c{i}", Path(f"{i}.jpg"), label) for i, label in enumerate("AABBBCD")]
    donor = donors(cases, seed=3)
    assert donor == donors(cases, seed=3) and all(d != i for i, d in enumerate(donor))
    assert all(cases[d].label != cases[i].label for i, d in enumerate(donor))
    same = [Case("x", Path("x.jpg"), "A"), Case("y", Path("y.jpg"), "A")]
    assert donors(same, seed=0) == [1, 0]  # one class only: still another case's image
    with pytest.raises(ConfigError, match="at least 2 cases"):
        donors(same[:1], seed=0)
