"""Inputs of the preparation commands: every image format load_image reads is accepted everywhere (one shared
list), the image options are validated (0 means no limit for --max-pixels as for --max-side), and a run that
writes nothing is an error."""
import json
from pathlib import Path

import pytest
from PIL import Image

import data_prep.check_notes as check_notes_module
import skingpt4.datasets.image_text_pairs as pairs_module
import skingpt4.evaluation.cases as cases_module
from data_prep.check_notes import check_notes
from data_prep.check_notes import main as check_notes_main
from data_prep.prepare_dermnet import main as dermnet_main
from skingpt4.common.images import IMAGE_SUFFIXES, load_image

FOLDER = "Acne and Rosacea Photos"  # a Dermnet folder of the mapping
# (suffix, Pillow format, save options) for the formats people send photos in
FORMATS = [(".jpg", "JPEG", {}), (".png", "PNG", {}), (".bmp", "BMP", {}), (".webp", "WEBP", {}),
           (".tif", "TIFF", {}), (".tiff", "TIFF", {}), (".jpeg", "JPEG", {})]


def animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((200, 40, 40), (40, 200, 40), (40, 40, 200))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


@pytest.fixture
def dermnet(tmp_path) -> Path:
    folder = tmp_path / "dermnet" / "train" / FOLDER
    folder.mkdir(parents=True)
    for i, (suffix, fmt, options) in enumerate(FORMATS):
        Image.new("RGB", (48, 36), (180, 120 + i, 100)).save(folder / f"photo{i}{suffix}", fmt, **options)
    animated_gif(folder / "moving.gif")
    (folder / "notes.txt").write_text("not a photo")
    return tmp_path / "dermnet"


def test_one_shared_list_of_image_suffixes():
    assert check_notes_module.IMAGE_SUFFIXES is IMAGE_SUFFIXES
    assert pairs_module.IMAGE_SUFFIXES is IMAGE_SUFFIXES and cases_module.IMAGE_SUFFIXES is IMAGE_SUFFIXES
    assert {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"} <= set(IMAGE_SUFFIXES)
    assert not {".txt", ".json", ".pdf", ".eps", ".mpg", ".h5"} & set(IMAGE_SUFFIXES)


def test_every_listed_format_pillow_can_write_is_read_by_load_image(tmp_path):
    Image.init()
    extensions = Image.registered_extensions()
    tried = 0
    for suffix in IMAGE_SUFFIXES:
        fmt = extensions[suffix]
        if fmt not in Image.SAVE or fmt in ("PDF",):
            continue
        path = tmp_path / f"sample{suffix}"
        try:
            Image.new("RGB", (16, 16), (120, 80, 60)).save(path, fmt)
        except (OSError, ValueError, KeyError):  # a writer that needs other modes or sizes: not this test's point
            continue
        assert load_image(path).mode == "RGB", suffix  # (an icon format may store it larger)
        tried += 1
    assert tried >= 15


def test_dermnet_accepts_every_image_format(dermnet, tmp_path, capsys):
    assert dermnet_main(["--root", str(dermnet), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["written"] == len(FORMATS) + 1  # the animated GIF too
    assert report["skipped"] == {"not_an_image_file": {"count": 1, "examples": [{"item": f"{FOLDER}/notes.txt"}]}}


def test_notes_accept_an_animated_gif(tmp_path):
    notes = tmp_path / "notes"
    (notes / "image").mkdir(parents=True)
    animated_gif(notes / "image" / "case1.gif")
    Image.new("RGB", (20, 20)).save(notes / "image" / "case2.bmp")
    (notes / "filter_cap.json").write_text(json.dumps({"annotations": [
        {"image_id": "case1", "caption": "A moving lesion."}, {"image_id": "case2", "caption": "A bitmap."}]}))
    usable, sources, skips = check_notes(notes)
    assert [r["image_id"] for r in usable] == ["case1", "case2"] and not skips.counts
    assert check_notes_main(["--dir", str(notes), "--out", str(tmp_path / "clean")]) == 0


def test_max_pixels_zero_means_no_limit(dermnet, tmp_path, capsys):
    assert dermnet_main(["--root", str(dermnet), "--out", str(tmp_path / "out"), "--max-pixels", "0"]) == 0
    assert f"wrote {len(FORMATS) + 1} image-caption pairs" in capsys.readouterr().out


@pytest.mark.parametrize("option, message", [
    (["--max-pixels", "-1"], "argument --max-pixels: must be >= 0 (0 = no limit), got -1"),
    (["--max-side", "-5"], "argument --max-side: must be >= 0 (0 = keep size), got -5"),
    (["--workers", "0"], "argument --workers: must be >= 1, got 0"),
    (["--max-pixels", "lots"], "argument --max-pixels: expected a whole number, got 'lots'"),
])
def test_bad_image_options_are_refused(option, message, dermnet, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        dermnet_main(["--root", str(dermnet), "--out", str(tmp_path / "out"), *option])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
    assert not (tmp_path / "out").exists()


def test_a_run_that_writes_nothing_is_an_error(dermnet, tmp_path, capsys):
    assert dermnet_main(["--root", str(dermnet), "--out", str(tmp_path / "out"), "--max-pixels", "100"]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"error: wrote 0 image-caption pairs to '{tmp_path / 'out'}' (image_too_large={len(FORMATS) + 1}, "
                          "not_an_image_file=1); see ")
    assert len(out.splitlines()) == 1
