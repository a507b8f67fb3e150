"""Preparation commands: SKINCON, Dermnet, doctors' notes, webdataset shards, statistics."""
import csv
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.check_notes import check_notes
from data_prep.check_notes import main as check_notes_main
from data_prep.common import PrepareError
from data_prep.make_synthetic import SKINCON_HEADER, make_synthetic
from data_prep.prepare_dermnet import DEFAULT_MAPPING, load_mapping, prepare_dermnet
from data_prep.prepare_skincon import prepare_skincon
from skingpt4.common.concept_table import concept_caption
from data_prep.stats import dataset_stats
from data_prep.write_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    # per class: 8 train / 4 test images, dealt over the class's folders (Dermatitis and Others: 4 folders each)
    make_synthetic(out, per_class=8, test_per_class=4, skincon_images=14, ddi_images=4, notes_per_class=1,
                   skincon_test_images=1, size=64, prepare=False, log=lambda m: None)
    return out / "raw"


def skincon_args(raw, **over):
    args = dict(fitzpatrick_annotations=raw / "skincon" / "annotations_fitzpatrick17k.csv",
                fitzpatrick_images=raw / "fitzpatrick17k" / "images",
                fitzpatrick_metadata=raw / "fitzpatrick17k" / "fitzpatrick17k.csv",
                ddi_annotations=raw / "skincon" / "annotations_ddi.csv", ddi_images=raw / "ddi" / "images",
                ddi_metadata=raw / "ddi" / "ddi_metadata.csv")
    return {**args, **over, **QUIET}


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def records(folder):
    return json.loads((Path(folder) / "filter_cap.json").read_text())["annotations"]


def tree_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- SKINCON
def test_skincon_records_follow_the_csv(raw, tmp_path):
    report = prepare_skincon(tmp_path / "out", **skincon_args(raw))
    got = {r["image_id"]: r for r in records(tmp_path / "out")}
    # independent reading of the CSVs: which rows should survive, with which concepts
    expected = {}
    for source, name in (("fitzpatrick17k", "annotations_fitzpatrick17k.csv"), ("ddi", "annotations_ddi.csv")):
        header, *rows = read_rows(raw / "skincon" / name)
        for row in rows:
            cells = dict(zip(header, row))
            concepts = [c for c in header[2:-1] if cells[c] == "1"]
            image = (raw / ("fitzpatrick17k" if source == "fitzpatrick17k" else "ddi") / "images" / cells["ImageID"])
            if cells["Do not consider this image"] == "0" and concepts and image.exists() and image.stat().st_size > 600:
                expected[f"{source}_{Path(cells['ImageID']).stem}"] = concepts
    assert {k: v["concepts"] for k, v in got.items()} == expected
    assert report["written"] == len(expected)
    assert {k: v["count"] for k, v in report["skipped"].items()} == {
        "do_not_consider": 2, "no_concepts": 1, "image_missing": 1, "image_truncated": 1}
    for record in got.values():
        assert record["caption"] == concept_caption(record["concepts"])
        assert (tmp_path / "out" / "image" / f"{record['image_id']}.jpg").is_file()
    # skin types joined from the metadata files
    fitz = {r[0]: r[1] for r in read_rows(raw / "fitzpatrick17k" / "fitzpatrick17k.csv")[1:]}
    roman = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI", "-1": None}
    ddi = {r[2]: {"12": "I-II", "34": "III-IV", "56": "V-VI"}[r[3]] for r in read_rows(raw / "ddi" / "ddi_metadata.csv")[1:]}
    for record in got.values():
        stem = record["original_file"]
        want = roman[fitz[Path(stem).stem]] if record["source"] == "fitzpatrick17k" else ddi[stem]
        assert record["skin_type"] == want
    assert None in {r["skin_type"] for r in got.values()}  # the -1 row stays unknown


def test_caption_wording():
    assert concept_caption(["Scale", "Erythema", "Plaque"]) == "This lesion shows plaque, scale and erythema."
    assert concept_caption(["Purpura/Petechiae"]) == "This lesion shows purpura or petechiae."
    assert concept_caption(["Brown(Hyperpigmentation)", "Gray"]) == "This lesion shows brown hyperpigmentation and gray color."


def test_skincon_older_release_by_column_name(raw, tmp_path):
    """Older release: no 'Do not consider this image' column, another column order -> same captions."""
    header, *rows = read_rows(raw / "skincon" / "annotations_ddi.csv")
    keep = [i for i, h in enumerate(header) if h != "Do not consider this image"]
    order = [keep[0], keep[1]] + keep[2:][::-1]
    old = tmp_path / "old.csv"
    with open(old, "w", newline="") as f:
        csv.writer(f).writerows([[header[i] for i in order]] + [[row[i] for i in order] for row in rows])
    prepare_skincon(tmp_path / "new", ddi_annotations=raw / "skincon" / "annotations_ddi.csv",
                    ddi_images=raw / "ddi" / "images", **QUIET)
    prepare_skincon(tmp_path / "old", ddi_annotations=old, ddi_images=raw / "ddi" / "images", **QUIET)
    new_records, old_records = records(tmp_path / "new"), records(tmp_path / "old")
    flagged = {f"ddi_{Path(r[1]).stem}" for r in rows if r[-1] == "1"}
    assert [r for r in old_records if r["image_id"] not in flagged] == new_records
    assert flagged and flagged <= {r["image_id"] for r in old_records}  # the old file has no flag to drop them


def test_older_fitzpatrick17k_metadata(raw, tmp_path):
    """Older fitzpatrick17k.csv copies: a leading index column and a single 'fitzpatrick' column."""
    header, *rows = read_rows(raw / "fitzpatrick17k" / "fitzpatrick17k.csv")
    old = tmp_path / "fitzpatrick17k.csv"
    with open(old, "w", newline="") as f:
        csv.writer(f).writerows([["", "md5hash", "fitzpatrick", "label"]] +
                                [[i, r[0], r[1], r[3]] for i, r in enumerate(rows)])
    prepare_skincon(tmp_path / "old", **skincon_args(raw, fitzpatrick_metadata=old))
    prepare_skincon(tmp_path / "new", **skincon_args(raw))
    assert records(tmp_path / "old") == records(tmp_path / "new")


def test_skincon_csv_errors_name_column_and_line(raw, tmp_path):
    header, *rows = read_rows(raw / "skincon" / "annotations_ddi.csv")
    missing = tmp_path / "missing.csv"
    with open(missing, "w", newline="") as f:
        csv.writer(f).writerows([[c for c in header if c != "Erythema"]] + [row[:-1] for row in rows])
    with pytest.raises(PrepareError, match=r"SKINCON ddi annotations '.*missing\.csv': missing column 'Erythema'"):
        prepare_skincon(tmp_path / "a", ddi_annotations=missing, ddi_images=raw / "ddi" / "images", **QUIET)
    rows[2][header.index("Papule")] = "yes"
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header] + rows)
    with pytest.raises(PrepareError, match=r"'.*bad\.csv' line 4, column 'Papule': expected 0 or 1, got 'yes'"):
        prepare_skincon(tmp_path / "b", ddi_annotations=bad, ddi_images=raw / "ddi" / "images", **QUIET)
    meta = tmp_path / "meta.csv"
    meta.write_text(",DDI_ID,DDI_file,skin_tone,malignant,disease\n0,1,000001.png,99,FALSE,x\n")
    with pytest.raises(PrepareError, match=r"'.*meta\.csv' line 2, column 'skin_tone': expected 12, 34 or 56, got '99'"):
        prepare_skincon(tmp_path / "c", ddi_annotations=raw / "skincon" / "annotations_ddi.csv",
                        ddi_images=raw / "ddi" / "images", ddi_metadata=meta, **QUIET)


def test_exact_skincon_header_in_synthetic_csvs(raw):
    design = (",ImageID,Vesicle,Papule,Macule,Plaque,Abscess,Pustule,Bulla,Patch,Nodule,Ulcer,Crust,Erosion,Excoriation,"
              "Atrophy,Exudate,Purpura/Petechiae,Fissure,Induration,Xerosis,Telangiectasia,Scale,Scar,Friable,Sclerosis,"
              "Pedunculated,Exophytic/Fungating,Warty/Papillomatous,Dome-shaped,Flat topped,Brown(Hyperpigmentation),"
              "Translucent,White(Hypopigmentation),Purple,Yellow,Black,Erythema,Comedo,Lichenification,Blue,Umbilicated,"
              "Poikiloderma,Salmon,Wheal,Acuminate,Burrow,Gray,Pigmented,Cyst,Do not consider this image")
    assert ",".join(SKINCON_HEADER) == design
    for name in ("annotations_fitzpatrick17k.csv", "annotations_ddi.csv"):
        assert (raw / "skincon" / name).read_text().splitlines()[0] == design


def test_preparing_twice_is_byte_identical(raw, tmp_path):
    prepare_skincon(tmp_path / "a", phrasings="varied", **skincon_args(raw))
    prepare_skincon(tmp_path / "b", phrasings="varied", **skincon_args(raw))
    first = tree_bytes(tmp_path / "a")
    assert first == tree_bytes(tmp_path / "b") and len(first) > 10
    with pytest.raises(PrepareError, match="already holds a prepared set; pass --overwrite"):
        prepare_skincon(tmp_path / "a", **skincon_args(raw))
    prepare_skincon(tmp_path / "a", phrasings="varied", overwrite=True, **skincon_args(raw))
    assert tree_bytes(tmp_path / "a") == first
    assert len({r["caption"].split(" ")[0] for r in records(tmp_path / "a")}) > 1  # varied phrasings in use
    prepare_dermnet(raw / "dermnet", "train", tmp_path / "d1", **QUIET)
    prepare_dermnet(raw / "dermnet", "train", tmp_path / "d2", workers=2, **QUIET)  # parallel: same bytes
    assert tree_bytes(tmp_path / "d1") == tree_bytes(tmp_path / "d2")


# ---------------------------------------------------------------- Dermnet
PAPER_MAPPING = {  # docs/datasets.md, written out independently of skingpt4/common/classes.json
    "Acne and rosacea": ["Acne and Rosacea Photos"],
    "Malignant lesions": ["Actinic Keratosis Basal Cell Carcinoma and other Malignant Lesions"],
    "Dermatitis": ["Atopic Dermatitis Photos", "Eczema Photos", "Exanthems and Drug Eruptions",
                   "Poison Ivy Photos and other Contact Dermatitis"],
    "Bullous disease": ["Bullous Disease Photos"],
    "Bacterial infections": ["Cellulitis Impetigo and other Bacterial Infections"],
    "Light diseases": ["Light Diseases and Disorders of Pigmentation"],
    "Connective tissue diseases": ["Lupus and other Connective Tissue diseases"],
    "Benign tumors": ["Seborrheic Keratoses and other Benign Tumors"],
    "Melanoma skin cancer, nevi, moles": ["Melanoma Skin Cancer Nevi and Moles"],
    "Fungal infections": ["Nail Fungus and other Nail Disease", "Tinea Ringworm Candidiasis and other Fungal Infections"],
    "Psoriasis and lichen planus": ["Psoriasis pictures Lichen Planus and related diseases"],
    "Infestations and bites": ["Scabies Lyme Disease and other Infestations and Bites"],
    "Urticaria hives": ["Urticaria Hives"],
    "Vascular tumors": ["Vascular Tumors"],
    "Herpes": ["Herpes HPV and other STDs Photos"],
    "Others": ["Hair Loss Photos Alopecia and other Hair Diseases", "Systemic Disease", "Vasculitis Photos",
               "Warts Molluscum and other Viral Infections"],
}
AMBIGUOUS = {"Systemic Disease", "Vasculitis Photos", "Warts Molluscum and other Viral Infections"}


def test_mapping_file_matches_the_paper():
    mapping = load_mapping()
    assert {folder: label for label, folders in PAPER_MAPPING.items() for folder in folders} == mapping["folders"]
    assert list(mapping["classes"]) == list(PAPER_MAPPING) and len(mapping["folders"]) == 23
    assert set(mapping["ambiguous"]) == AMBIGUOUS


def test_dermnet_labels_and_captions(raw, tmp_path):
    report = prepare_dermnet(raw / "dermnet", "train", tmp_path / "all", **QUIET)
    mapping = load_mapping()
    got = records(tmp_path / "all")
    assert report["written"] == 16 * 8 and not report["skipped"]
    for record in got:
        assert record["label"] == mapping["folders"][record["folder"]]
        assert record["caption"] == f"This looks like {mapping['classes'][record['label']]}."
    assert set(Counter(r["label"] for r in got).values()) == {8}
    dropped = prepare_dermnet(raw / "dermnet", "train", tmp_path / "drop", drop_ambiguous=True, **QUIET)
    assert dropped["skipped"]["dropped_ambiguous"]["count"] == 3 * 2
    assert {r["folder"] for r in records(tmp_path / "drop")} == set(mapping["folders"]) - AMBIGUOUS


def test_dermnet_unknown_folder_is_reported_never_guessed(raw, tmp_path):
    root = tmp_path / "dermnet"
    shutil.copytree(raw / "dermnet", root)
    (root / "train" / "Eczema Photos").rename(root / "train" / "Eczema Pictures")
    with pytest.raises(PrepareError, match=r"1 Dermnet folder\(s\) not in the mapping .*: 'Eczema Pictures' "
                                           r"\(close to 'Eczema Photos'\)\. Add them to a class's 'dermnet_folders'"):
        prepare_dermnet(root, "train", tmp_path / "a", **QUIET)
    report = prepare_dermnet(root, "train", tmp_path / "b", skip_unknown=True, **QUIET)
    assert report["skipped"]["unknown_folder"]["count"] == 2
    # a user-edited copy of the mapping places it
    mapping = json.loads(DEFAULT_MAPPING.read_text())
    by_name = {c["name"]: c for c in mapping["classes"]}
    by_name["Dermatitis"]["dermnet_folders"].append("Eczema Pictures")
    mapping["unplaced_dermnet_folders"].remove("Systemic Disease")  # and drops another folder
    mapping["dropped_dermnet_folders"] = ["Systemic Disease"]
    (tmp_path / "mine.json").write_text(json.dumps(mapping))
    report = prepare_dermnet(root, "train", tmp_path / "c", mapping_path=tmp_path / "mine.json", **QUIET)
    assert report["skipped"]["dropped_by_mapping"]["count"] == 2
    assert {r["label"] for r in records(tmp_path / "c") if r["folder"] == "Eczema Pictures"} == {"Dermatitis"}
    by_name["Psoriasis and lichen planus"]["dermnet_folders"].append("Eczema Pictures")
    (tmp_path / "bad.json").write_text(json.dumps(mapping))
    with pytest.raises(PrepareError, match=r"folder 'Eczema Pictures' is placed in two classes \(Dermatitis, "
                                           r"Psoriasis and lichen planus\)"):
        prepare_dermnet(root, "train", tmp_path / "d", mapping_path=tmp_path / "bad.json", **QUIET)


def test_awkward_images_during_preparation(raw, tmp_path):
    """Every kind of problem image: converted (RGB, upright) or skipped with a counted, named reason."""
    folder = tmp_path / "dermnet" / "train" / "Eczema Photos"
    folder.mkdir(parents=True)
    # 10x10 blocks of random colours: distinct in every direction, smooth enough for JPEG to keep
    blocks = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(blocks, 10, axis=0), 10, axis=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90).save(folder / "rotated.png", exif=exif)
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    Image.fromarray(rgb).quantize(8).save(folder / "palette.png")
    Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA").save(folder / "rgba.png")
    Image.new("CMYK", (20, 20), (0, 0, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(folder / "sixteen.png")
    good = io.BytesIO()
    Image.fromarray(rgb).save(good, "JPEG")
    (folder / "truncated.jpg").write_bytes(good.getvalue()[:400])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    (folder / "text.jpg").write_text("not an image")
    Image.new("L", (200, 200)).save(folder / "huge.png")
    (folder / "notes.txt").write_text("a stray file")
    report = prepare_dermnet(tmp_path / "dermnet", "train", tmp_path / "out", max_pixels=20_000, max_side=0, **QUIET)
    skipped = {reason: [e["item"] for e in info["examples"]] for reason, info in report["skipped"].items()}
    assert skipped == {"image_empty": ["eczema_photos__zero"], "image_not_an_image": ["eczema_photos__text"],
                       "image_too_large": ["eczema_photos__huge"], "image_truncated": ["eczema_photos__truncated"],
                       "image_unreadable": ["eczema_photos__corrupt"], "not_an_image_file": ["Eczema Photos/notes.txt"]}
    out = tmp_path / "out" / "image"
    written = {p.stem.split("__")[1]: Image.open(p) for p in out.iterdir()}
    assert set(written) == {"rotated", "grey", "palette", "rgba", "cmyk", "sixteen"}
    assert all(img.mode == "RGB" and img.format == "JPEG" for img in written.values())
    assert written["rotated"].size == (50, 30)  # upright, as the EXIF tag asked
    assert np.abs(np.asarray(written["rotated"]).astype(int) - rgb).mean() < 12  # JPEG-close to the original
    assert np.abs(np.asarray(written["cmyk"]).astype(int) - [255, 255, 0]).max() <= 3  # yellow ink -> yellow
    sixteen = np.asarray(written["sixteen"]).astype(int)[..., 0]
    assert np.abs(sixteen - rgb[..., 0]).mean() < 6  # rescaled from 16 bit, not clipped to white


# ---------------------------------------------------------------- notes, shards, stats
def test_check_notes_reports_every_problem(raw, tmp_path, capsys):
    notes = tmp_path / "notes"
    shutil.copytree(raw / "notes", notes)
    data = json.loads((notes / "filter_cap.json").read_text())
    ann = data["annotations"]
    ids = [a["image_id"] for a in ann]
    ann[1]["caption"] = "   "
    ann.append(dict(ann[0]))                                            # duplicate pair
    ann.append({"image_id": ids[2], "caption": "another caption"})      # duplicate image_id
    ann.append({"image_id": "nobody", "caption": "x"})                  # missing image
    ann.append({"caption": "no id"})                                    # malformed
    (notes / "filter_cap.json").write_text(json.dumps(data))
    (notes / "image" / f"{ids[3]}.jpg").write_bytes(b"junk")           # undecodable
    usable, _, skips = check_notes(notes)
    assert dict(skips.counts) == {"empty_caption": 1, "duplicate_pair": 1, "duplicate_image_id": 1, "image_missing": 1,
                                  "malformed_record": 1, "image_not_an_image": 1}
    assert len(usable) == len(ids) - 2
    assert check_notes_main(["--dir", str(notes), "--out", str(tmp_path / "clean")]) == 1
    printed = capsys.readouterr().out
    assert f"image_missing: annotations[{len(ids) + 2}] (nobody)" in printed
    assert len(records(tmp_path / "clean")) == len(ids) - 2
    assert check_notes_main(["--dir", str(tmp_path / "clean")]) == 0


def test_shards_round_trip_and_are_byte_identical(raw, tmp_path):
    prepare_dermnet(raw / "dermnet", "test", tmp_path / "prep", **QUIET)
    index = write_shards(tmp_path / "prep", tmp_path / "s1", maxcount=10)
    write_shards(tmp_path / "prep", tmp_path / "s2", maxcount=10)
    assert index == {"shards": [f"shard-{i:06d}.tar" for i in range(7)], "count": 16 * 4, "maxcount": 10,
                     "skipped": {}}
    assert tree_bytes(tmp_path / "s1") == tree_bytes(tmp_path / "s2")
    samples = {}
    for shard in index["shards"]:
        with tarfile.open(tmp_path / "s1" / shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    for record in records(tmp_path / "prep"):
        sample = samples[record["image_id"]]
        assert json.loads(sample["json"]) == record
        assert sample["jpg"] == (tmp_path / "prep" / "image" / f"{record['image_id']}.jpg").read_bytes()


def test_stats_table_csv_and_chart(raw, tmp_path):
    prepare_skincon(tmp_path / "prep", **skincon_args(raw))
    table, stats = dataset_stats(tmp_path / "prep", tmp_path / "stats")
    recs = records(tmp_path / "prep")
    concepts = Counter(c for r in recs for c in r["concepts"])
    assert dict(stats["concepts"]) == dict(concepts)
    assert dict(stats["skin_type"]) == dict(Counter(r["skin_type"] or "unknown" for r in recs))
    rows = read_rows(tmp_path / "stats" / "stats.csv")
    assert rows[0] == ["section", "name", "count"]
    assert {(s, n): int(c) for s, n, c in rows[1:] if s == "Concept"} == {("Concept", k): v for k, v in concepts.items()}
    name, count = stats["concepts"][0]
    assert f"{len(recs)} records" in table and name in table
    with Image.open(tmp_path / "stats" / "stats.png") as png:
        assert png.format == "PNG" and png.size[0] > 500
    prepare_dermnet(raw / "dermnet", "train", tmp_path / "derm", **QUIET)
    _, stats = dataset_stats(tmp_path / "derm", None)
    assert dict(stats["label"])["Dermatitis"] == 8 and len(stats["label"]) == 16


def test_command_lines(raw, tmp_path, capsys):
    """The documented command lines, in process (the subprocess form is covered by test_data_synthetic)."""
    from data_prep.prepare_dermnet import main as dermnet_main
    from data_prep.prepare_skincon import main as skincon_main
    from data_prep.stats import main as stats_main
    from data_prep.write_shards import main as shards_main

    assert skincon_main(["--out", str(tmp_path / "sk"),
                         "--fitzpatrick-annotations", str(raw / "skincon" / "annotations_fitzpatrick17k.csv"),
                         "--fitzpatrick-images", str(raw / "fitzpatrick17k" / "images"),
                         "--fitzpatrick-metadata", str(raw / "fitzpatrick17k" / "fitzpatrick17k.csv"),
                         "--ddi-annotations", str(raw / "skincon" / "annotations_ddi.csv"),
                         "--ddi-images", str(raw / "ddi" / "images"), "--ddi-metadata", str(raw / "ddi" / "ddi_metadata.csv"),
                         "--phrasings", "varied", "--max-side", "32", "--workers", "2"]) == 0
    assert "image-caption pairs to" in capsys.readouterr().out
    assert max(Image.open(p).size[0] for p in (tmp_path / "sk" / "image").iterdir()) == 32
    assert dermnet_main(["--root", str(raw / "dermnet"), "--split", "test", "--out", str(tmp_path / "dn"),
                         "--drop-ambiguous"]) == 0
    assert len(records(tmp_path / "dn")) == 16 * 4 - 3  # the 3 ambiguous folders hold 1 test image each
    assert dermnet_main(["--root", str(raw / "dermnet"), "--split", "valid", "--out", str(tmp_path / "x")]) == 2
    assert "no folder" in capsys.readouterr().out
    assert shards_main(["--src", str(tmp_path / "dn"), "--out", str(tmp_path / "sh"), "--maxcount", "8"]) == 0
    assert "wrote 61 samples in 8 shard(s)" in capsys.readouterr().out
    assert shards_main(["--src", str(tmp_path / "dn"), "--out", str(tmp_path / "sh")]) == 2
    assert "already holds shards; pass --overwrite" in capsys.readouterr().out
    assert stats_main(["--src", str(tmp_path / "dn")]) == 0
    assert "Class" in capsys.readouterr().out
