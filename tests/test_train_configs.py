"""Every file in train_configs/ passes the run, model and dataset schemas; the full-size ones carry the paper's
settings; each step-2 config starts from its step-1 config's checkpoint; the ablations are what they say."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from skingpt4.common import registry
from skingpt4.common.config import apply_schema, load_config
from skingpt4.models.skin_gpt4 import model_config
from skingpt4.runners import build_run_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "train_configs").glob("*.yaml"))
FULL = [p for p in CONFIGS if not p.name.startswith("tiny_")]
LLMS = {"llama2_13bchat": "llama2_13b_chat", "vicuna13b": "vicuna_13b", "vicuna7b": "vicuna_7b"}


def test_the_expected_set_of_configs_exists():
    variants = ("step1", "step2", "ablation_step1_only", "ablation_step2_only")
    expected = {f"skingpt4_{llm}_{v}.yaml" for llm in LLMS for v in variants} | {f"tiny_{v}.yaml" for v in variants}
    assert {p.name for p in CONFIGS} == expected


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_every_schema(path):
    cfg = load_config(path)
    build_run_config(cfg.run)
    model_config(cfg.model)
    for name, block in cfg.datasets.items():
        builder = registry.datasets.get(block.get("builder") or name)
        apply_schema(block, builder.Config, where=f"datasets.{name}")


@pytest.mark.parametrize("path", FULL, ids=lambda p: p.name)
def test_full_configs_carry_the_paper_settings(path):
    cfg = load_config(path)
    run = build_run_config(cfg.run)
    assert (run.max_epoch, run.iters_per_epoch, run.warmup_steps, run.init_lr) == (20, 5000, 5000, 1e-4)
    assert (run.min_lr, run.warmup_lr, run.weight_decay, run.batch_size_train) == (8e-5, 1e-6, 0.05, 2)
    assert run.lr_sched == "linear_warmup_cosine_lr" and cfg.model.max_txt_len == 160
    llm = next(key for key in LLMS if path.stem.startswith(f"skingpt4_{key}_"))
    assert cfg.model.model_type == LLMS[llm]
    assert cfg.model.prompt_template == "###Human: {} ###Assistant: " and cfg.model.end_sym == "###"


@pytest.mark.parametrize("prefix", [f"skingpt4_{llm}" for llm in LLMS] + ["tiny"])
def test_steps_and_ablations_fit_together(prefix):
    load = {v: load_config(Path(CONFIGS[0].parent, f"{prefix}_{v}.yaml"))
            for v in ("step1", "step2", "ablation_step1_only", "ablation_step2_only")}
    step1_ckpt = f"{load['step1'].run.output_dir}/checkpoint_last.pth"
    assert load["step2"].model.ckpt == step1_ckpt
    assert set(load["step1"].datasets) == set(load["ablation_step1_only"].datasets) == {"skincon_concepts"}
    assert set(load["step2"].datasets) == set(load["ablation_step2_only"].datasets) == {"dermnet", "skin_notes"}
    assert load["ablation_step2_only"].model.ckpt is None
    assert load["step1"].model.prompt_path == "prompts/step1.txt"
    assert load["step2"].model.prompt_path == "prompts/step2.txt"
    outputs = [c.run.output_dir for c in load.values()]
    assert len(set(outputs)) == 4  # no two recipes write into the same directory
    same_run = lambda c: OmegaConf.to_container(c.run) | {"output_dir": None}  # noqa: E731
    assert same_run(load["step1"]) == same_run(load["ablation_step1_only"])
