"""Several processes (torchrun, gloo) equal one: LoRA with DDP replicas, and sharded training (run.sharding=fsdp,
FSDP2) of the tiny SkinGPT-4 with LoRA adapters, against one process with the same global batch; a sharded run
resumes exactly."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import train as train_script
from skingpt4.common.config import load_config
from skingpt4.models.checkpoints import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEP1 = str(REPO / "train_configs" / "tiny_step1.yaml")
pytest.importorskip("peft")


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def torchrun(cfg_path, runs, env):
    """Several training runs in one pair of processes (tests/train_twice.py): one start-up for all."""
    args = [arg for i, options in enumerate(runs) for arg in ((["+"] if i else []) + options)]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(REPO / "tests" / "train_twice.py"), str(cfg_path), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_gloo_processes_with_lora_match_one(train_data, tiny_assets, tmp_path, subprocess_env):
    # One caption for all: every sample has the same number of answer tokens, so the mean of per-process token
    # means equals the mean over the global batch.
    cfg = load_config(STEP1)
    cfg.datasets = {"pairs": {"builder": "image_text_pairs", "storage": str(train_data / "same_caption")}}
    cfg.model.lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    cfg_path = tmp_path / "pairs_lora.yaml"
    OmegaConf.save(cfg, cfg_path)
    run = {"max_epoch": 1, "iters_per_epoch": 4, "progress_bar": False, "tensorboard": False, "log_freq": 1}
    two = {sharding: {**run, "batch_size_train": 2, "sharding": sharding, "output_dir": tmp_path / sharding}
           for sharding in ("none", "fsdp")}  # DDP replicas, then FSDP2 shards
    split = {**two["fsdp"], "output_dir": tmp_path / "split"}
    resumed = [{**split, "stop_after_iters": 2}, {**split, "resume_ckpt_path": tmp_path / "split" / "checkpoint_last.pth"}]
    bf16 = {**two["fsdp"], "output_dir": tmp_path / "bf16"}  # bf16 frozen base + fp32 LoRA in the same FSDP units
    torchrun(cfg_path, [[f"run.{k}={v}" for k, v in r.items()] for r in [*two.values(), *resumed]]
             + [[f"run.{k}={v}" for k, v in bf16.items()] + ["model.llm_precision=bf16"]], subprocess_env)
    one = {**run, "batch_size_train": 4, "output_dir": tmp_path / "one"}
    single, _ = train_script.run_training(load_config(cfg_path, [f"run.{k}={v}" for k, v in one.items()]))
    a = read_checkpoint(single.checkpoint)
    assert any(".lora_B." in k for k in a["model"])
    for sharding in two:
        b = read_checkpoint(tmp_path / sharding / "checkpoint_last.pth")
        assert b["sharding"] == sharding and b["global_batch_size"] == 4
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6, msg=f"{sharding}: {key}")
        assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / sharding), abs=1e-5), sharding
    # a sharded run stopped at step 2 and resumed (full-state checkpoint) ends where the straight one does
    straight, again = (read_checkpoint(tmp_path / d / "checkpoint_last.pth") for d in ("fsdp", "split"))
    assert again["step"] == 4
    for key in straight["model"]:
        torch.testing.assert_close(straight["model"][key], again["model"][key], rtol=0, atol=0, msg=key)

    # bf16 base + fp32 adapters, sharded (the torch minimum's FSDP2 takes mixed dtypes): it trains like fp32
    half = read_checkpoint(tmp_path / "bf16" / "checkpoint_last.pth")
    assert half["model"].keys() == a["model"].keys()
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in half["model"].values())
    assert losses(tmp_path / "bf16") == pytest.approx(losses(tmp_path / "one"), abs=0.05)


def test_sharded_loading_reads_only_the_shard():
    """The gloo measurement (benchmarks/bench_shard_memory.py): the LLM built on the meta device, each process
    reading its shards from the safetensors files; the memory a process allocates falls with the rank count, and
    the shards hold the file's values."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks import bench_shard_memory as bench

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llm"
        bench.make_llm(folder, hidden=512, layers=4, vocab=16000)
        with ThreadPoolExecutor(2) as pool:  # both groups at once (each process measures its own memory)
            one, two = pool.map(lambda ranks: bench.run(folder, ranks, "meta"), (1, 2))
    assert all(r["weights_equal_file"] for r in one + two)
    alone, shard = one[0]["anon_added_mb"], max(r["anon_added_mb"] for r in two)
    assert shard < 0.75 * alone, (alone, shard)  # about half (the file is 117 MB)


def test_sharding_refusals(tmp_path):
    from skingpt4.common.config import ConfigError
    from skingpt4.runners.recipe import check_accelerate_launch, check_config

    cfg = load_config(STEP1, ["run.sharding=fsdp", "model.llm_quantization=4bit"])
    with pytest.raises(ConfigError, match="FSDP shards plain weights") as err:
        check_config(cfg)
    assert "\n" not in str(err.value)
    for variable in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        for sharding in ("none", "fsdp"):
            with pytest.raises(ConfigError, match="does not read"):
                check_accelerate_launch(sharding, {variable: "true"})
    check_accelerate_launch("none", {"ACCELERATE_USE_FSDP": "false"})  # a plain accelerate launch is fine
