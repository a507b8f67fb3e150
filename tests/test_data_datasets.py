"""Dataset builders, build_datasets and collate over synthetic prepared sets; bad images mid-training."""
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from data_prep.make_synthetic import make_synthetic
from data_prep.write_shards import write_shards
from skingpt4.common.config import ConfigError
from skingpt4.common.config import load_config
from skingpt4.datasets import build_datasets, collate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("work") / "data" / "synthetic"  # the documented default location
    make_synthetic(out, per_class=2, test_per_class=1, skincon_images=12, ddi_images=4, notes_per_class=1,
                   size=64, stats=False, log=lambda m: None)
    return out


def build_one(block: dict, name: str = "src"):
    [(got_name, dataset, ratio)] = build_datasets(OmegaConf.create({name: block}))
    assert got_name == name
    return dataset, ratio


def annotations(folder):
    return json.loads((folder / "filter_cap.json").read_text())["annotations"]


def test_build_datasets_gives_name_dataset_ratio(synthetic):
    prepared = synthetic / "prepared"
    cfg = OmegaConf.create({
        "skincon_concepts": {"storage": str(prepared / "skincon")},
        "dermnet": {"storage": str(prepared / "dermnet"), "sample_ratio": 3},
        "skin_notes": {"storage": str(prepared / "notes"), "vis_processor": {"name": "blip2_image_eval"}},
        "more_pairs": {"builder": "image_text_pairs", "storage": str(prepared / "dermnet_test")},
    })
    built = build_datasets(cfg)
    assert [(n, r) for n, _, r in built] == [("skincon_concepts", 1.0), ("dermnet", 3.0), ("skin_notes", 1.0),
                                            ("more_pairs", 1.0)]
    for (name, dataset, _), folder in zip(built, ["skincon", "dermnet", "notes", "dermnet_test"]):
        records = annotations(prepared / folder)
        assert len(dataset) == len(records)
        item = dataset[0]
        assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
        assert item["text_input"] == records[0]["caption"] and item["image_id"] == records[0]["image_id"]
        assert item["source"] == name
    skincon_item = built[0][1][0]
    assert skincon_item["concepts"] == annotations(prepared / "skincon")[0]["concepts"]
    assert built[1][1][0]["label"] == annotations(prepared / "dermnet")[0]["label"]


@pytest.mark.parametrize("config", ["tiny_step1.yaml", "tiny_step2.yaml"])
def test_tiny_train_configs_find_the_synthetic_sets(synthetic, config, monkeypatch):
    """The train configs point at data/synthetic/prepared/...: the layout make_synthetic writes."""
    cfg = load_config(REPO / "train_configs" / config)  # merged over its base layers
    monkeypatch.chdir(synthetic.parents[1])
    built = build_datasets(cfg.datasets)
    assert built and all(len(dataset) > 0 for _, dataset, _ in built)


def test_eval_processor_is_deterministic(synthetic):
    dataset, _ = build_one({"builder": "dermnet", "storage": str(synthetic / "prepared" / "dermnet"),
                            "vis_processor": {"name": "blip2_image_eval"}})
    assert torch.equal(dataset[1]["image"], dataset[1]["image"])


def test_collate_drops_bad_items():
    a = {"image": torch.zeros(3, 4, 4), "text_input": "a", "image_id": "1", "label": "X"}
    b = {"image": torch.ones(3, 4, 4), "text_input": "b", "image_id": "2", "concepts": ["Scale"]}
    batch = collate([a, None, b])
    assert batch["image"].shape == (2, 3, 4, 4) and torch.equal(batch["image"][1], b["image"])
    assert batch["text_input"] == ["a", "b"] and batch["label"] == ["X", None] and batch["concepts"] == [None, ["Scale"]]
    assert collate([None, None]) is None


def test_bad_images_in_training_are_skipped_and_counted_across_workers(synthetic, tmp_path, caplog):
    folder = tmp_path / "pairs"
    shutil.copytree(synthetic / "prepared" / "dermnet", folder)
    records = annotations(folder)
    images = folder / "image"
    (images / f"{records[0]['image_id']}.jpg").write_bytes(b"")                                    # empty
    (images / f"{records[1]['image_id']}.jpg").write_bytes((images / f"{records[2]['image_id']}.jpg").read_bytes()[:300])  # truncated
    (images / f"{records[3]['image_id']}.jpg").write_bytes(b"<html>not found</html>")              # not an image
    (images / f"{records[4]['image_id']}.jpg").unlink()                                            # missing
    Image.new("RGB", (100, 100)).save(images / f"{records[5]['image_id']}.jpg")                    # too large (limit below)
    dataset, _ = build_one({"builder": "image_text_pairs", "storage": str(folder), "max_pixels": 5000})
    assert len(dataset) == len(records) - 1 and dataset.bad.counts() == {"missing": 1}
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    assert sum(len(b["text_input"]) for b in batches if b is not None) == len(records) - 5
    # counted in the worker processes, visible here
    assert dataset.bad.counts() == {"missing": 1, "empty": 1, "not_an_image": 1, "too_large": 1, "truncated": 1}
    assert dataset.bad.total() == 5


def test_all_bad_batch_is_none(synthetic, tmp_path):
    folder = tmp_path / "pairs"
    shutil.copytree(synthetic / "prepared" / "notes", folder)
    for path in (folder / "image").iterdir():
        path.write_bytes(b"junk")
    dataset, _ = build_one({"builder": "skin_notes", "storage": str(folder)})
    assert collate([dataset[i] for i in range(len(dataset))]) is None
    assert dataset.bad.counts() == {"not_an_image": len(dataset)}


def test_webdataset_streams_all_samples_and_skips_bad_ones(synthetic, tmp_path):
    shards = synthetic / "shards" / "skincon"
    expected = {r["image_id"]: r["caption"] for r in annotations(synthetic / "prepared" / "skincon")}
    dataset, _ = build_one({"builder": "webdataset", "shards": str(shards), "repeat": False, "shuffle_buffer": 0})
    for workers in (0, 2):
        items = [item for batch in DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate)
                 for item in zip(batch["image_id"], batch["text_input"])]
        assert sorted(items) == sorted(expected.items())  # every sample once, split across workers
    # a damaged image inside a shard: counted and skipped, the stream goes on
    folder = tmp_path / "pairs"
    shutil.copytree(synthetic / "prepared" / "skincon", folder)
    first = annotations(folder)[0]["image_id"]
    (folder / "image" / f"{first}.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    index = write_shards(folder, tmp_path / "shards", maxcount=5)  # preparation skips (and counts) it ...
    assert sum(info["count"] for info in index["skipped"].values()) == 1
    import webdataset as wds  # ... so a shard from elsewhere carries it
    with wds.TarWriter(str(tmp_path / "shards" / "shard-999999.tar")) as sink:
        sink.write({"__key__": first, "jpg": b"\xff\xd8\xff\xe0 cut", "json": annotations(folder)[0]})
    dataset, _ = build_one({"builder": "webdataset", "shards": [str(p) for p in sorted((tmp_path / "shards").glob("*.tar"))],
                            "repeat": False, "shuffle_buffer": 10})
    items = [item for item in dataset]
    assert sum(item is None for item in items) == 1 and len(items) == len(expected)
    assert dataset.bad.total() == 1 and set(dataset.bad.counts()) <= {"truncated", "unreadable"}


def test_webdataset_truncated_shard_is_counted_and_skipped(synthetic, tmp_path):
    """A shard cut short (an interrupted copy): the samples before the cut come through, the error is counted
    and the next shard is read in full."""
    [shard] = sorted((synthetic / "shards" / "skincon").glob("*.tar"))
    members = tarfile.open(shard).getmembers()
    cut = members[4].offset_data + 100  # inside the third sample's image
    broken = tmp_path / "shard-broken.tar"
    broken.write_bytes(shard.read_bytes()[:cut])
    dataset, _ = build_one({"builder": "webdataset", "shards": [str(broken), str(shard)],
                            "repeat": False, "shuffle_buffer": 0})
    items = [item for item in dataset if item is not None]
    assert len(items) == 2 + len(members) // 2
    assert dataset.bad.counts().get("unreadable", 0) >= 1


def test_webdataset_repeat_restarts_and_pattern_works(synthetic):
    shards = sorted((synthetic / "shards" / "skincon").glob("*.tar"))
    pattern = str(shards[0]).replace("000000", "{000000..%06d}" % (len(shards) - 1))
    dataset, _ = build_one({"builder": "webdataset", "shards": pattern, "repeat": True, "shuffle_buffer": 4, "seed": 1})
    count = len(annotations(synthetic / "prepared" / "skincon"))
    stream = iter(dataset)
    ids = [next(stream)["image_id"] for _ in range(2 * count)]
    assert sorted(ids[:count]) == sorted(ids[count:])  # second pass = the same samples again


def test_config_errors_name_the_key(synthetic):
    prepared = synthetic / "prepared"
    cases = [
        ({"skincon_concepts": {"storage": str(prepared / "skincon"), "sample_ration": 2}},
         r"unknown key 'datasets\.skincon_concepts\.sample_ration' \(did you mean 'sample_ratio'\?\)"),
        ({"dermnet": {}}, r"config key 'datasets\.dermnet\.storage' is not set; put a Dermnet split prepared by "
                          r"data_prep/prepare_dermnet\.py there"),
        ({"dermnet": {"storage": "/no/such/dir"}}, r"config key 'datasets\.dermnet\.storage': no such directory '/no/such/dir'"),
        ({"skincon": {"storage": str(prepared / "skincon")}},
         r"'datasets\.skincon': unknown dataset builder 'skincon'; did you mean 'skincon_concepts'\?"),
        ({"skincon_concepts": {"storage": str(prepared / "notes")}},
         r"dataset 'skincon_concepts': \d+ records of '.*filter_cap\.json' lack 'concepts'"),
        ({"dermnet": {"storage": str(prepared / "dermnet"), "sample_ratio": -1}},
         r"'datasets\.dermnet\.sample_ratio' must be > 0 \(or 0 to leave the source out\), got -1"),
        ({"dermnet": {"storage": str(prepared / "dermnet"), "vis_processor": {"name": "blip2_image_train", "size": 3}}},
         r"unknown key 'datasets\.dermnet\.vis_processor\.size'"),
        ({"w": {"builder": "webdataset", "shards": str(prepared / "nope-{000..001}.tar")}},
         r"config key 'datasets\.w\.shards': 2 shard\(s\) not found"),
        ({"w": {"builder": "webdataset"}}, r"config key 'datasets\.w\.shards' is not set"),
        ({}, r"config section 'datasets' is empty"),
        ({"raw": {"builder": "image_text_pairs", "storage": str(synthetic / "raw")}},
         r"'.*raw' must contain filter_cap\.json and image/"),
    ]
    for cfg, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_datasets(OmegaConf.create(cfg))
    # a source set to null or given sample_ratio 0 is left out (its folder is not even looked at)
    kept = build_datasets(OmegaConf.create({"dermnet": {"storage": str(prepared / "dermnet")}, "skin_notes": None,
                                            "w": {"builder": "webdataset", "shards": "/nowhere", "sample_ratio": 0}}))
    assert [name for name, _, _ in kept] == ["dermnet"]


def test_malformed_annotations_name_the_record(synthetic, tmp_path):
    folder = tmp_path / "pairs"
    shutil.copytree(synthetic / "prepared" / "notes", folder)
    data = json.loads((folder / "filter_cap.json").read_text())
    del data["annotations"][2]["caption"]
    (folder / "filter_cap.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"annotations\[2\] needs 'image_id' and 'caption'"):
        build_one({"builder": "skin_notes", "storage": str(folder)})
