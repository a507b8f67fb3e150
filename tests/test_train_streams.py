"""Webdataset shards as a training source: the data plan mixes them with folders by sample_ratio, every pass
reads each sample once across ranks and DataLoader workers, a loader started at micro-step k continues the
uninterrupted stream exactly, and train.py trains (and resumes) the tiny SkinGPT-4 on shards."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import train as train_script
from data_prep.write_shards import write_shards
from skingpt4.common.config import ConfigError, load_config
from skingpt4.datasets import build_datasets, collate
from skingpt4.models.checkpoints import read_checkpoint as load_checkpoint
from skingpt4.runners.data import BatchPlan, as_sources, build_train_loader

REPO = Path(__file__).resolve().parents[1]
STEP1 = REPO / "train_configs" / "tiny_step1.yaml"
SMALL_EVAL = {"name": "blip2_image_eval", "image_size": 32}


@pytest.fixture(scope="module")
def shards(train_data, tmp_path_factory) -> Path:
    """The 16 samples of the `skincon` folder in 8 shards of 2."""
    out = tmp_path_factory.mktemp("shards") / "skincon"
    write_shards(train_data / "skincon", out, maxcount=2)
    return out


def sources(blocks: dict):
    return as_sources(build_datasets(OmegaConf.create(blocks)))


def shard_block(shards, **extra):
    return {"builder": "webdataset", "shards": str(shards), "shuffle_buffer": 4, **extra}


def loader(srcs, *, start=0, total=40, batch_size=2, world_size=1, rank=0, num_workers=0, seed=7):
    return build_train_loader(srcs, collate, batch_size=batch_size, world_size=world_size, rank=rank, seed=seed,
                              total_micro_steps=total, start_micro_step=start, num_workers=num_workers,
                              pin_memory=False)


def test_folder_and_shards_are_mixed_as_planned(train_data, shards):
    srcs = sources({"folder": {"builder": "image_text_pairs", "storage": str(train_data / "dermnet"),
                               "vis_processor": SMALL_EVAL},
                    "shards": shard_block(shards, vis_processor=SMALL_EVAL, sample_ratio=3)})
    plan = BatchPlan(srcs, 2, 1, 0, seed=7, total_micro_steps=200)
    drawn = [set(packed["batch"]["source"]) for packed in loader(srcs, total=200)]
    assert drawn == [{srcs[int(c)].name} for c in plan.choices]  # each micro-batch from its planned source
    share = sum(d == {"shards"} for d in drawn) / len(drawn)
    assert abs(share - 0.75) < 0.08, share  # sample_ratio 1 : 3
    # The stream's items, in order: each pass (16 samples) reads every sample once, in a new order.
    ids = [i for packed in loader(srcs, total=200) if packed["batch"]["source"][0] == "shards"
           for i in packed["batch"]["image_id"]]
    passes = [ids[k:k + 16] for k in range(0, 48, 16)]
    expected = sorted(f"skincon_{i:02d}" for i in range(16))
    assert all(sorted(p) == expected for p in passes) and passes[0] != passes[1] != passes[2]


def test_each_pass_reads_every_sample_once_across_ranks_and_workers(shards):
    srcs = sources({"shards": shard_block(shards, vis_processor=SMALL_EVAL)})
    # 2 ranks x 2 workers = 4 readers of 2 shards each: the first 4 batches of 2 of a rank are its pass 0.
    seen = []
    for rank in range(2):
        batches = iter(loader(srcs, world_size=2, rank=rank, num_workers=2))
        seen += [i for _ in range(4) for i in next(batches)["batch"]["image_id"]]
    assert sorted(seen) == sorted(f"skincon_{i:02d}" for i in range(16))


def test_too_few_shards_for_the_readers_is_a_clear_error(shards):
    srcs = sources({"shards": shard_block(shards)})
    with pytest.raises(ConfigError, match=r"datasets.shards: 8 shard\(s\) cannot be split over 12 readers \(3 "
                                          r"process\(es\) x 4 DataLoader worker\(s\)\); every reader needs at least "
                                          "one shard"):
        loader(srcs, world_size=3, num_workers=4)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_started_at_step_k_continues_the_stream_exactly(train_data, shards, num_workers):
    """What resume relies on: batches from micro-step k on equal those of the uninterrupted loader (ids, item
    seeds and the augmented pixels), whichever worker's turn it is at k."""
    srcs = sources({"folder": {"builder": "image_text_pairs", "storage": str(train_data / "notes"),
                               "vis_processor": {"name": "blip2_image_train", "image_size": 32}},
                    "shards": shard_block(shards, vis_processor={"name": "blip2_image_train", "image_size": 32},
                                          sample_ratio=2)})
    straight = [p["batch"] for p in loader(srcs, total=24, num_workers=num_workers)]
    for start in (5, 6, 11):
        resumed = [p["batch"] for p in loader(srcs, start=start, total=24, num_workers=num_workers)]
        assert len(resumed) == 24 - start
        for a, b in zip(straight[start:], resumed):
            assert (a["image_id"], a["item_seed"]) == (b["image_id"], b["item_seed"])
            assert torch.equal(a["image"], b["image"])


# ---------------------------------------------------------------------------------------- train.py end to end
@pytest.fixture
def shard_config(train_data, shards, tiny_assets, tmp_path) -> Path:
    """tiny_step1.yaml on a mix of the skincon folder (ratio 1) and the skincon shards (ratio 2)."""
    cfg = load_config(STEP1)  # merged over its base layers
    cfg.datasets = {"folder": {"builder": "image_text_pairs", "storage": str(train_data / "skincon")},
                    "shards": shard_block(shards, sample_ratio=2)}
    path = tmp_path / "streams.yaml"
    OmegaConf.save(cfg, path)
    return path


def run_options(out, **run):
    settings = {"max_epoch": 1, "iters_per_epoch": 8, "log_freq": 1, "progress_bar": False, "tensorboard": False,
                "batch_size_train": 2, "output_dir": str(out), **run}
    return [f"run.{k}={v}" for k, v in settings.items()]


def train(cfg_path, out, **run):
    return train_script.run_training(load_config(cfg_path, run_options(out, **run)))


def assert_same_projection(a_path, b_path):
    a, b = load_checkpoint(a_path)["model"], load_checkpoint(b_path)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_tiny_skingpt4_trains_on_shards_and_only_the_projection_changes(shard_config, tmp_path):
    from skingpt4.models import build_model

    cfg = OmegaConf.load(shard_config)
    cfg.datasets = {"shards": cfg.datasets.shards}
    OmegaConf.save(cfg, shard_config)
    torch.manual_seed(42)  # train.py seeds with run.seed before building the model
    fresh = build_model({"variant": "tiny"}).state_dict()
    result, model = train(shard_config, tmp_path / "run")
    trained = model.state_dict()
    assert sorted(k for k in fresh if not torch.equal(fresh[k], trained[k])) == ["llama_proj.bias",
                                                                                 "llama_proj.weight"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "finished" and len(records) == 8
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert records[-1]["bad_samples"] == {"shards": {}}


def test_a_stopped_run_on_shards_resumes_to_the_weights_of_a_straight_run(shard_config, tmp_path, caplog):
    """One process, 2 DataLoader workers per source, stopped at step 5: the plan (seed 42, ratio 1:2) drew the
    stream in steps 0, 1, 4 and will in 5, 6, so the next stream batch is worker 1's turn. The resumed run ends
    with bit-identical weights."""
    straight, _ = train(shard_config, tmp_path / "straight", num_workers=2)
    plan = BatchPlan(as_sources(build_datasets(OmegaConf.load(shard_config).datasets)), 2, 1, 0, 42, 8)
    assert plan.draws(1, 5) == 3 and {int(c) for c in plan.choices[5:]} == {0, 1}
    stopped, _ = train(shard_config, tmp_path / "split", num_workers=2, stop_after_iters=5)
    assert (stopped.status, stopped.step) == ("stopped", 5)
    resumed, _ = train(shard_config, tmp_path / "split", num_workers=2, resume_ckpt_path=str(stopped.checkpoint))
    assert resumed.step == 8
    assert_same_projection(straight.checkpoint, resumed.checkpoint)
    assert "stream readers" not in caplog.text


def test_resuming_a_stream_with_other_workers_warns(shard_config, tmp_path, caplog):
    stopped, _ = train(shard_config, tmp_path / "run", num_workers=2, stop_after_iters=1)
    assert load_checkpoint(stopped.checkpoint)["stream_readers"] == 2
    with caplog.at_level("WARNING", logger="skingpt4.train"):
        resumed, _ = train(shard_config, tmp_path / "run", num_workers=0, resume_ckpt_path=str(stopped.checkpoint),
                           stop_after_iters=2)
    assert resumed.status == "stopped" and resumed.step == 2
    assert ("resuming with 1 stream readers (processes x DataLoader workers), the checkpoint was written with 2: "
            "the webdataset sources are read in another order than the interrupted run's") in caplog.text


def test_a_killed_run_on_shards_resumes_to_the_weights_of_a_straight_run(shard_config, tmp_path,
                                                                        kill_train_after_checkpoint):
    """SIGKILL after a checkpoint at some step of 12, then resume: same weights as a straight run."""
    args = run_options(tmp_path / "killed", iters_per_epoch=12, save_freq=1, num_workers=2)
    killed_at = kill_train_after_checkpoint(shard_config, args, tmp_path / "killed", min_step=3)
    assert 3 <= killed_at < 12
    last = tmp_path / "killed" / "checkpoint_last.pth"
    resumed, _ = train(shard_config, tmp_path / "killed", iters_per_epoch=12, save_freq=1, num_workers=2,
                       resume_ckpt_path=str(last))
    straight, _ = train(shard_config, tmp_path / "straight", iters_per_epoch=12, num_workers=2)
    assert resumed.step == 12
    assert_same_projection(straight.checkpoint, resumed.checkpoint)


# ---------------------------------------------------------------------------------------- bad images in the log
def truncate(folder: Path, count: int) -> list[str]:
    cut = sorted(folder.glob("image/*.jpg"))[:count]
    for path in cut:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return [p.stem for p in cut]


def shards_as_is(folder: Path, out: Path, maxcount: int) -> None:
    """Shards holding the folder's image bytes unchecked (write_shards would skip the damaged ones): damaged
    samples inside shards, as a copy gone wrong or another tool may leave them."""
    import webdataset as wds

    out.mkdir(parents=True)
    records = json.loads((folder / "filter_cap.json").read_text())["annotations"]
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=maxcount, verbose=0) as sink:
        for record in sorted(records, key=lambda r: r["image_id"]):
            sink.write({"__key__": record["image_id"], "jpg": (folder / "image" / f"{record['image_id']}.jpg").read_bytes(),
                        "json": record})


@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_skipped_images_are_reported_by_reason(kind, train_data, tiny_assets, tmp_path, caplog):
    folder = tmp_path / "skincon"
    shutil.copytree(train_data / "skincon", folder)
    truncate(folder, 4)
    if kind == "folder":
        block = {"builder": "image_text_pairs", "storage": str(folder)}
    else:
        shards_as_is(folder, tmp_path / "shards", maxcount=2)
        block = shard_block(tmp_path / "shards")
    cfg = load_config(STEP1)  # merged over its base layers
    cfg.datasets = {"skincon": block}
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    # 4 steps x batch 4 = one pass over the 16 samples, read in-process (no read-ahead): exactly 4 truncated.
    with caplog.at_level("INFO", logger="skingpt4.train"):
        train(tmp_path / "cfg.yaml", tmp_path / "run", iters_per_epoch=4, log_freq=2, batch_size_train=4,
              num_workers=0)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert records[0]["bad_samples"]["skincon"].get("truncated", 0) <= 4
    assert records[-1]["bad_samples"] == {"skincon": {"truncated": 4}}
    assert sum(r["bad_items"] for r in records) == 4
    assert "skipped images: skincon: truncated=4" in caplog.text


def test_the_frozen_feature_cache_refuses_a_stream(shard_config, tmp_path):
    cfg = OmegaConf.load(shard_config)
    cfg.datasets = {"shards": {**cfg.datasets.shards, "vis_processor": {"name": "blip2_image_eval"}}}
    OmegaConf.save(cfg, shard_config)
    with pytest.raises(ConfigError, match="run.cache_frozen_features needs indexable datasets, but 'shards' is a "
                                          "stream .webdataset shards. that is never read to its end"):
        train(shard_config, tmp_path / "run", cache_frozen_features=True)
