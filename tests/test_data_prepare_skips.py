"""Data preparation never hangs, crashes or leaves half a result on bad files: FIFOs, folders, dangling links,
decompression bombs and huge files are skipped and counted by reason; shards are written atomically."""
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

import data_prep.write_shards as write_shards_module
from data_prep.common import PrepareError
from data_prep.prepare_dermnet import main as dermnet_main
from data_prep.prepare_dermnet import prepare_dermnet
from data_prep.write_shards import STAGING_PREFIX, write_shards
from data_prep.write_shards import main as shards_main

QUIET = {"log": lambda m: None}


def png_bomb(width=30000, height=30000) -> bytes:
    """A tiny PNG whose header claims 900 MP: decoding it would take gigabytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def prepared_folder(root: Path, n: int = 6) -> Path:
    """A prepared folder (filter_cap.json + image/) of n good JPEGs."""
    (root / "image").mkdir(parents=True)
    records = []
    for i in range(n):
        Image.new("RGB", (16, 16), (40 * i, 100, 200)).save(root / "image" / f"s{i}.jpg")
        records.append({"image_id": f"s{i}", "caption": f"caption {i}"})
    (root / "filter_cap.json").write_text(json.dumps({"annotations": records}))
    return root


def add_record(folder: Path, image_id: str) -> None:
    data = json.loads((folder / "filter_cap.json").read_text())
    data["annotations"].append({"image_id": image_id, "caption": "bad"})
    (folder / "filter_cap.json").write_text(json.dumps(data))


def shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*.tar"))


def test_shards_skip_bad_images_by_reason_without_hanging(tmp_path, capsys):
    src = prepared_folder(tmp_path / "prep")
    (src / "image" / "bomb.png").write_bytes(png_bomb())
    (src / "image" / "dir.jpg").mkdir()
    os.mkfifo(src / "image" / "pipe.jpg")  # reading it would block forever
    (src / "image" / "big.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 5000)
    for image_id in ("bomb", "dir", "pipe", "big", "nowhere"):
        add_record(src, image_id)
    assert shards_main(["--src", str(src), "--out", str(tmp_path / "out"), "--maxcount", "4",
                        "--max-bytes", "4000", "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote 6 samples in 2 shard(s) to {tmp_path / 'out'}"
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert {reason: info["count"] for reason, info in index["skipped"].items()} == {
        "image_missing": 1, "image_not_a_file": 2, "image_too_large": 2}
    assert [line.split()[2] for line in printed[1:]] == ["image_missing", "image_not_a_file", "image_too_large"]
    details = {e["item"]: e.get("detail", "") for info in index["skipped"].values() for e in info["examples"]}
    assert "FIFO" in details["pipe"] and "directory" in details["dir"]
    assert "pixels" in details["bomb"] and "file-size limit of 4000" in details["big"]
    assert shard_files(tmp_path / "out") == ["shard-000000.tar", "shard-000001.tar"]


def test_a_failing_run_leaves_no_partial_shard_and_keeps_the_old_ones(tmp_path, monkeypatch):
    src = prepared_folder(tmp_path / "prep")
    out = tmp_path / "out"
    write_shards(src, out, maxcount=2)
    before = {name: (out / name).read_bytes() for name in shard_files(out)}
    real = write_shards_module.jpeg_bytes
    calls = []

    def fail_on_the_fifth(path, *args):
        calls.append(path)
        if len(calls) == 5:  # two shards are complete by then, the third is open
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(write_shards_module, "jpeg_bytes", fail_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        write_shards(src, out, maxcount=2, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [*before, "shards.json"]  # no staging folder left
    assert {name: (out / name).read_bytes() for name in shard_files(out)} == before
    # a record whose image is missing -> skipped; all records unusable -> an error, and nothing written
    empty = tmp_path / "empty"
    (empty / "image").mkdir(parents=True)
    (empty / "filter_cap.json").write_text(json.dumps({"annotations": [{"image_id": "x", "caption": "c"}]}))
    monkeypatch.undo()
    with pytest.raises(PrepareError, match=r"no usable sample in .* \(image_missing=1\); nothing written"):
        write_shards(empty, tmp_path / "out2")
    assert list((tmp_path / "out2").iterdir()) == []


def test_a_killed_runs_staging_folder_is_swept_and_never_read(tmp_path):
    src = prepared_folder(tmp_path / "prep")
    out = tmp_path / "out"
    stale = out / f"{STAGING_PREFIX}dead"  # what kill -9 during writing leaves: only under the staging folder
    stale.mkdir(parents=True)
    (stale / "shard-000000.tar").write_bytes(b"half a tar")
    index = write_shards(src, out, maxcount=10)
    assert index["shards"] == ["shard-000000.tar"] and not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shards.json"]


def test_dermnet_counts_fifos_folders_links_and_stray_files(tmp_path, capsys):
    train = tmp_path / "dermnet" / "train"
    folder = train / "Eczema Photos"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (200, 30 * i, 30)).save(folder / f"good{i}.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "sub.jpg").mkdir()
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "link.jpg").symlink_to(folder / "good0.jpg")  # a link to a good image is read
    (train / "readme.txt").write_text("beside the class folders")
    assert dermnet_main(["--root", str(tmp_path / "dermnet"), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    skipped = {reason: [(e["item"], e.get("detail")) for e in info["examples"]]
               for reason, info in report["skipped"].items()}
    assert skipped == {"dangling_link": [("Eczema Photos/dangling.jpg", "a symbolic link to nothing")],
                       "not_in_a_class_folder": [("readme.txt", "a file")],
                       "special_file": [("Eczema Photos/pipe.jpg", "a FIFO (named pipe)")],
                       "subfolder": [("Eczema Photos/sub.jpg", "a folder")]}
    assert report["written"] == 4
    for reason in skipped:
        assert f" {reason}  (e.g. " in printed


def test_shard_writing_shows_progress(tmp_path, capsys):
    write_shards(prepared_folder(tmp_path / "prep"), tmp_path / "out", progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("shards: 100%") and "6/6" in line for line in bar), bar


# ---------------------------------------------------------------- validation split
def test_val_fraction_holds_out_a_class_stratified_share(tmp_path, capsys):
    from collections import Counter

    root = tmp_path / "dermnet" / "train"
    sizes = {"Acne and Rosacea Photos": 10, "Eczema Photos": 20, "Urticaria Hives": 5, "Vascular Tumors": 1}
    for folder, n in sizes.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (12, 12), (10 * i, 50, 90)).save(root / folder / f"{i:02d}.jpg")
    out = tmp_path / "prepared" / "dermnet"
    assert dermnet_main(["--root", str(tmp_path / "dermnet"), "--out", str(out), "--val-fraction", "0.2",
                         "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert f"to {out}_val" in printed
    train = json.loads((out / "filter_cap.json").read_text())["annotations"]
    val = json.loads((tmp_path / "prepared" / "dermnet_val" / "filter_cap.json").read_text())["annotations"]
    assert Counter(r["label"] for r in val) == {"Acne and rosacea": 2, "Dermatitis": 4, "Urticaria hives": 1}
    assert Counter(r["label"] for r in train) == {"Acne and rosacea": 8, "Dermatitis": 16, "Urticaria hives": 4,
                                                  "Vascular tumors": 1}  # a class of 1 stays in training
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in val}
    assert {r["split"] for r in val} == {"train_val"}
    assert all((tmp_path / "prepared" / "dermnet_val" / "image" / f"{r['image_id']}.jpg").is_file() for r in val)
    # same seed -> same split; another seed -> another one
    again = prepare_dermnet(tmp_path / "dermnet", "train", tmp_path / "b", val_fraction=0.2, seed=7, **QUIET)
    assert again["validation"]["written"] == 7
    assert json.loads((tmp_path / "b_val" / "filter_cap.json").read_text())["annotations"] == val
    prepare_dermnet(tmp_path / "dermnet", "train", tmp_path / "c", val_fraction=0.2, seed=8, **QUIET)
    assert json.loads((tmp_path / "c_val" / "filter_cap.json").read_text())["annotations"] != val
    with pytest.raises(SystemExit) as exit_info:  # argparse's one-line usage error
        dermnet_main(["--root", str(tmp_path / "dermnet"), "--out", str(tmp_path / "d"), "--val-fraction", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("argument --val-fraction: must be in [0, 1), got 1")


def test_skincon_image_index_keeps_fifos_and_links_for_the_loader_to_refuse(tmp_path):
    from data_prep.common import ImageJob, encode_image, index_files
    from skingpt4.common.images import IMAGE_SUFFIXES

    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "good.jpg")
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "folder.jpg").mkdir()
    found = index_files(tmp_path, IMAGE_SUFFIXES)
    assert sorted(found) == ["dangling.png", "good.jpg", "pipe.jpg"]
    reasons = {name: encode_image(ImageJob(name, str(path), 0, None))[2] for name, path in found.items()}
    assert reasons == {"dangling.png": "missing", "good.jpg": None, "pipe.jpg": "not_a_file"}
