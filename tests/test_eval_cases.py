"""Case sets drawn stratified by class with a seed (never the first N rows), and the CLI that writes them."""
import csv
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

import evaluate as evaluate_script
from skingpt4.evaluation.cases import Case, CaseError, load_cases, main as cases_main, select_cases
from skingpt4.evaluation.extract import ClassExtractor


def sorted_by_class(classes=5, per_class=6) -> list[Case]:
    """As a Dermnet folder lists them: all of one class, then the next."""
    return [Case(f"c{k}-{i}", Path(f"c{k}-{i}.jpg"), f"class {k}") for k in range(classes) for i in range(per_class)]


def test_cases_per_class_takes_n_of_every_class_with_a_seed():
    cases = sorted_by_class() + [Case("small-0", Path("s.jpg"), "small")]
    chosen = select_cases(cases, cases_per_class=2, seed=0)
    assert Counter(c.label for c in chosen) == {**{f"class {k}": 2 for k in range(5)}, "small": 1}
    assert [c.case_id for c in chosen] == [c.case_id for c in cases if c in chosen]  # the source's order
    assert select_cases(cases, cases_per_class=2, seed=0) == chosen  # reproducible
    draws = {tuple(c.case_id for c in select_cases(cases, cases_per_class=2, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed matters


def test_a_limit_spreads_over_every_class_not_the_first_rows():
    cases = sorted_by_class(classes=16, per_class=6)
    chosen = select_cases(cases, limit=20, seed=3)
    counts = Counter(c.label for c in chosen)
    assert len(chosen) == 20 and len(counts) == 16 and set(counts.values()) == {1, 2}
    assert len({c.label for c in cases[:10]}) == 2  # what "first 10 rows" covered
    assert select_cases(cases) == cases


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_bad_sizes_are_case_errors(value):
    with pytest.raises(CaseError, match=r"evaluation.cases_per_class must be a whole number >= 1 or null"):
        select_cases(sorted_by_class(), cases_per_class=value)


def dermnet_folder(root: Path, per_folder=4) -> Path:
    folders = ["Acne and Rosacea Photos", "Eczema Photos", "Atopic Dermatitis Photos", "Urticaria Hives",
               "Hair Loss Photos Alopecia and other Hair Diseases"]
    for folder in folders:
        (root / folder).mkdir(parents=True)
        for i in range(per_folder):
            Image.new("RGB", (8, 8)).save(root / folder / f"{i}.jpg")
    return root


def test_load_cases_and_the_command_line_write_the_paper_style_set(tmp_path, capsys):
    root = dermnet_folder(tmp_path / "test")
    cases, _ = load_cases(root, ClassExtractor(), cases_per_class=3, seed=1)
    # Dermatitis is fed by two folders (8 images): still 3; every class 3
    assert Counter(c.label for c in cases) == {"Acne and rosacea": 3, "Dermatitis": 3, "Urticaria hives": 3,
                                               "Others": 3}
    out = tmp_path / "sets" / "paper.csv"
    assert cases_main(["--cases", str(root), "--cases-per-class", "2", "--exclude-class", "Others",
                       "--seed", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote 6 cases of 3 classes to {out}: Acne and rosacea 2, ")
    rows = list(csv.DictReader(out.open()))
    assert Counter(r["label"] for r in rows) == {"Acne and rosacea": 2, "Dermatitis": 2, "Urticaria hives": 2}
    again, _ = load_cases(out, ClassExtractor())  # the CSV is a case source; its images resolve
    assert [c.case_id for c in again] == [r["case_id"] for r in rows] and all(c.image.is_file() for c in again)
    assert cases_main(["--cases", str(root), "--exclude-class", "Nope", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: --exclude-class: 'Nope' is not a class")


def test_evaluate_has_a_cases_per_class_flag():
    args = evaluate_script.parse_args(["--cfg-path", "x.yaml", "--task", "clinical", "--out", "o",
                                       "--cases-per-class", "10"])
    assert args.options[-1] == "evaluation.cases_per_class=10"
