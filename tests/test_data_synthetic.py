"""The synthetic-sample generator: public formats, determinism, a world hard for pixel classifiers, the one-command
CLI."""
import json
import subprocess
import sys
from pathlib import Path


from data_prep.make_synthetic import main as make_synthetic_main
from data_prep.make_synthetic import make_synthetic
from data_prep.prepare_dermnet import load_mapping

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(per_class=2, test_per_class=1, skincon_images=12, ddi_images=4, notes_per_class=1, skincon_test_images=3,
             size=64)


def tree_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_raw_formats_and_determinism(tmp_path):
    make_synthetic(tmp_path / "a", prepare=False, seed=3, log=lambda m: None, **SMALL)
    make_synthetic(tmp_path / "b", prepare=False, seed=3, log=lambda m: None, **SMALL)
    make_synthetic(tmp_path / "c", prepare=False, seed=4, log=lambda m: None, **SMALL)
    a = tree_bytes(tmp_path / "a")
    assert a == tree_bytes(tmp_path / "b") and a != tree_bytes(tmp_path / "c")
    raw = tmp_path / "a" / "raw"
    mapping = load_mapping()
    for split, count in (("train", 2), ("test", 1)):
        folders = sorted(p.name for p in (raw / "dermnet" / split).iterdir())
        assert folders == sorted(mapping["folders"]) and len(folders) == 23
        per_class = {label: 0 for label in mapping["classes"]}  # balanced by class, dealt over its folders
        for folder in folders:
            per_class[mapping["folders"][folder]] += len(list((raw / "dermnet" / split / folder).iterdir()))
        assert set(per_class.values()) == {count}
    assert (raw / "fitzpatrick17k" / "fitzpatrick17k.csv").read_text().splitlines()[0] == (
        "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,three_partition_label,qc,url,url_alphanum")
    assert (raw / "ddi" / "ddi_metadata.csv").read_text().splitlines()[0] == ",DDI_ID,DDI_file,skin_tone,malignant,disease"
    fitz_ids = [line.split(",")[1] for line in (raw / "skincon" / "annotations_fitzpatrick17k.csv").read_text().splitlines()[1:]]
    ddi_ids = [line.split(",")[1] for line in (raw / "skincon" / "annotations_ddi.csv").read_text().splitlines()[1:]]
    assert all(len(i) == 36 and i.endswith(".jpg") for i in fitz_ids) and ddi_ids[:2] == ["000001.png", "000002.png"]
    notes = json.loads((raw / "notes" / "filter_cap.json").read_text())["annotations"]
    assert len(notes) == 16 and all((raw / "notes" / "image" / f"{n['image_id']}.jpg").is_file() for n in notes)


def test_the_world_is_hard_for_pixel_classifiers_and_not_random(tmp_path):
    """On a fixed seed, trivial pixel classifiers (skingpt4/tiny/baselines.py) stay at or under 60% on the held-out
    split -- colour finds the confusable pair, not the class -- yet well above chance: the images carry their
    labels, through the concept glyphs (shape and colour) rather than colour alone."""
    from skingpt4.tiny.baselines import dermnet_baselines
    from skingpt4.tiny.world import class_looks

    make_synthetic(tmp_path, stats=False, seed=0, log=lambda m: None,
                   **{**SMALL, "per_class": 16, "test_per_class": 8, "size": 128})
    result = dermnet_baselines(tmp_path)
    assert result["n_test"] == 128 and result["chance"] == 1 / 16
    for name in ("rgb_histogram_logreg", "hue_histogram_1nn"):
        assert 2 * result["chance"] <= result[name] <= 0.6, (name, result)
    looks = class_looks()  # the pairs: each class's partner is confusable with it, and only with it
    assert len(looks) == 16 and all(looks[looks[c]["partner"]]["partner"] == c for c in looks)


def test_one_command_generates_and_prepares(tmp_path, capsys):
    out = tmp_path / "synthetic"
    args = [sys.executable, "-m", "data_prep.make_synthetic", "--out", str(out), "--per-class", "1",
            "--skincon-images", "12", "--ddi-images", "4", "--notes-per-class", "1", "--image-size", "48",
            "--test-per-class", "1", "--skincon-test-images", "2"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prepared" in done.stdout and "skipped: do_not_consider 2, image_missing 1, image_truncated 1, no_concepts 1" in done.stdout
    for name in ("skincon", "dermnet", "dermnet_test", "notes"):
        assert json.loads((out / "prepared" / name / "filter_cap.json").read_text())["annotations"]
    assert list((out / "shards" / "skincon").glob("shard-*.tar"))
    assert (out / "stats" / "skincon" / "stats.png").is_file() and (out / "stats" / "dermnet" / "stats.csv").is_file()
    assert make_synthetic_main(["--out", str(out)]) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().out
    same = args[3:] + ["--reuse"]  # the same generation again: kept as it is
    before = (out / "synthetic.json").stat().st_mtime_ns
    assert make_synthetic_main(same) == 0 and "nothing to do" in capsys.readouterr().out
    assert (out / "synthetic.json").stat().st_mtime_ns == before


def test_held_out_case_lists(tmp_path):
    """cases/dermnet_test.csv (labels + the skin type each image was drawn with) and cases/skincon_test.csv
    (concepts) are case lists the evaluation reads; both are disjoint from the training images."""
    from skingpt4.evaluation.cases import load_cases
    from skingpt4.evaluation.extract import ClassExtractor

    make_synthetic(tmp_path, prepare=False, log=lambda m: None, **SMALL)
    extractor = ClassExtractor()
    dermnet, dropped = load_cases(tmp_path / "cases" / "dermnet_test.csv", extractor)
    assert not dropped and len(dermnet) == 16 and {c.label for c in dermnet} == set(extractor.classes)
    assert all(c.image.is_file() and "/test/" in c.image.as_posix() for c in dermnet)
    assert {c.skin_type for c in dermnet} <= {"I", "II", "III", "IV", "V", "VI"}
    skincon, _ = load_cases(tmp_path / "cases" / "skincon_test.csv", extractor)
    assert len(skincon) == 3 and all(c.image.is_file() and 1 <= len(c.concepts) <= 3 for c in skincon)
