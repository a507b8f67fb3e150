"""What the plots show (read back from the drawn figures, not just "a PNG exists"): the reliability diagram has
per-bin counts and each curve's ECE, the coverage plot marks the abstention threshold, the consistency plot's
case labels are readable (<= 24 characters, all different), and stats.png draws each skin-type scale apart."""
import math

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

from data_prep.stats import compute_stats, draw_chart, format_table, write_csv
from skingpt4.evaluation import calibration as cal
from skingpt4.evaluation import consistency
from skingpt4.evaluation.tables import short_labels

matplotlib.use("Agg")


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved during the test (their texts and axes stay readable after savefig)."""
    figures = []
    save = Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def texts(fig) -> list[str]:
    found = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend:
            found += [t.get_text() for t in legend.get_texts()]
    return found


def example():
    probs = torch.tensor([[0.9, 0.1], [0.62, 0.38], [0.55, 0.45], [0.2, 0.8], [0.93, 0.07]], dtype=torch.float64)
    return probs, torch.tensor([0, 1, 0, 1, 0])


def test_reliability_diagram_shows_counts_per_bin_and_ece(drawn, tmp_path):
    probs, labels = example()
    bins = cal.reliability_bins(probs, labels)
    ece = cal.expected_calibration_error(probs, labels)
    assert math.isclose(cal.ece_of_bins(bins), ece)
    cal.plot_reliability({"calibrated": bins}, tmp_path / "r.png")
    fig, = drawn
    shown = texts(fig)
    assert f"calibrated: ECE {ece:.3f}" in shown
    counts = sorted(int(t) for t in shown if t.isdigit())
    assert counts == sorted(r["n"] for r in bins if r["n"]) == [1, 1, 1, 2]  # 0.9 and 0.93 share a bin
    assert fig.axes[1].get_ylabel() == "cases per bin"


def test_coverage_plot_marks_the_threshold(drawn, tmp_path):
    probs, labels = example()
    rows = cal.coverage_accuracy(probs, labels)
    cal.plot_coverage({"calibrated": rows}, tmp_path / "c.png", threshold=0.6)
    at = cal.point_at(rows, 0.6)
    assert at["threshold"] == 0.6 and at["coverage"] == 0.8 and at["accuracy"] == 0.75  # 0.62 is the wrong one
    fig, = drawn
    assert "abstain below 0.6: coverage 80%, accuracy 75%" in texts(fig)
    marker = [c for c in fig.axes[0].collections if len(c.get_offsets()) == 1]
    assert [tuple(c.get_offsets()[0]) for c in marker] == [(0.8, 0.75)]


def test_case_labels_are_short_readable_and_distinct(drawn, tmp_path):
    folder = "Actinic Keratosis Basal Cell Carcinoma and other Malignant Lesions"
    ids = [f"{folder}/synthetic-test-01-{i:04d}" for i in range(3)] + ["Eczema Photos/case-0", "Acne Photos/case-0",
                                                                      "x" * 60]
    labels = short_labels(ids)
    assert all(len(label) <= 24 for label in labels) and len(set(labels)) == len(labels)
    assert labels[0] == "synthetic-test-01-0000" and labels[3:5] == ["EP/case-0", "AP/case-0"]
    assert labels[5] == "x" * 11 + "\u2026" + "x" * 12
    assert short_labels(["a/same", "a/same"]) == ["1:a/same", "2:a/same"]
    cases = [consistency.case_consistency(cid, ["Dermatitis"] * 3, ["a"] * 3) for cid in ids]
    consistency.plot(cases, consistency.summarize(cases), tmp_path / "k.png")
    fig, = drawn
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == labels


def test_stats_draw_each_skin_type_scale_in_its_own_panel(drawn, tmp_path):
    records = ([{"label": "Dermatitis", "skin_type": t} for t in ("I", "II", "II", "VI")] +
               [{"label": "Psoriasis", "skin_type": t} for t in ("I-II", "V-VI", "V-VI")] +
               [{"label": "Psoriasis", "skin_type": None}, {"label": "Dermatitis", "skin_type": "pale"}])
    stats = compute_stats(records)
    draw_chart(stats, tmp_path / "stats.png", "test")
    fig, = drawn
    panels = {ax.get_title(): [t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes}
    assert panels == {"Class: 9 images": ["Psoriasis", "Dermatitis"],
                      "Fitzpatrick skin type (I-VI): 4 images": ["VI", "II", "I"],
                      "DDI skin-tone band (I-II, III-IV, V-VI): 3 images": ["V-VI", "I-II"],
                      "Skin type unknown or of another scale: 2 images": ["pale", "unknown"]}
    write_csv(stats, tmp_path / "stats.csv")
    rows = [line.split(",") for line in (tmp_path / "stats.csv").read_text().splitlines()[1:]]
    assert ["DDI skin-tone band (I-II", " III-IV", " V-VI)", "I-II", "1"] not in rows  # quoted, not split
    import csv

    with open(tmp_path / "stats.csv", newline="") as f:
        sections = {(r["section"], r["name"]): int(r["count"]) for r in csv.DictReader(f)}
    assert sections[("Fitzpatrick skin type (I-VI)", "II")] == 2
    assert sections[("DDI skin-tone band (I-II, III-IV, V-VI)", "V-VI")] == 2
    assert sections[("Skin type unknown or of another scale", "unknown")] == 1
    table = format_table(stats, len(records))
    assert table.index("Fitzpatrick skin type") < table.index("DDI skin-tone band") < table.index("unknown")
