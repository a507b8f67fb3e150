"""Every recipe in train_configs/ passes the run, model and dataset schemas, for every LLM variant; the full-size
ones carry the paper's settings; step 2 starts from step 1's checkpoint; the ablations are overrides that do
what they say (docs/training.md)."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from skingpt4.common import registry
from skingpt4.common.config import apply_schema, load_config
from skingpt4.models.build import model_config
from skingpt4.models.variant_files import variant_files
from skingpt4.runners import build_run_config

FOLDER = Path(__file__).resolve().parents[1] / "train_configs"
RECIPES = ("step1", "step2", "tiny_step1", "tiny_step2",     # the runnable configs
           "step2_public", "tiny_step2_public",              # step 2 without the private notes, with validation
           "step2_lora", "step2_qlora", "step2_fsdp", "tiny_step2_lora",  # LoRA, QLoRA, sharded (docs/scaling.md)
           "step1_fast", "step2_fast",                       # the cached-feature fast path (docs/performance.md)
           "main_job_step1", "main_job_step2")               # the main job (scripts/main_job.sh)
LAYERS = ("paper_schedule", "tiny", "fast", "main_job")      # shared layers (no data of their own)
REAL_VARIANTS = ("llama2_13b_chat", "vicuna_13b", "vicuna_7b")


def test_the_expected_set_of_configs_exists():
    assert {p.stem for p in FOLDER.glob("*.yaml")} == set(RECIPES) | set(LAYERS)
    assert {"tiny", "tiny_llama3", *REAL_VARIANTS} <= set(variant_files())


@pytest.mark.parametrize("name,variant", [(name, None) for name in RECIPES]
                         + [(name, v) for name in ("step1", "step2") for v in REAL_VARIANTS])
def test_config_passes_every_schema(name, variant):
    cfg = load_config(FOLDER / f"{name}.yaml", [f"model.variant={variant}"] if variant else [])
    build_run_config(cfg.run)
    model = model_config(cfg.model)
    assert model.variant == (variant or ("tiny" if name.startswith(("tiny", "main_job")) else "llama2_13b_chat"))
    for section in ("datasets", "validation"):
        for block_name, block in (cfg.get(section) or {}).items():
            if block is None:  # a source the config leaves out
                continue
            builder = registry.datasets.get(block.get("builder") or block_name)
            apply_schema(block, builder.Config, where=f"{section}.{block_name}")


@pytest.mark.parametrize("variant", REAL_VARIANTS)
@pytest.mark.parametrize("name", ("step1", "step2"))
def test_full_configs_carry_the_paper_settings(name, variant):
    cfg = load_config(FOLDER / f"{name}.yaml", [f"model.variant={variant}"])
    run = build_run_config(cfg.run)
    assert (run.max_epoch, run.iters_per_epoch, run.warmup_steps, run.init_lr) == (20, 5000, 5000, 1e-4)
    assert (run.min_lr, run.warmup_lr, run.weight_decay, run.batch_size_train) == (8e-5, 1e-6, 0.05, 2)
    model = model_config(cfg.model)
    assert run.lr_sched == "linear_warmup_cosine_lr" and model.max_txt_len == 160
    template = registry.chat_templates.get(model.template)  # the released weights' format (docs/prompts.md)
    assert template.train_prompt == "###Human: {} ###Assistant: " and template.end_sym == "###"
    assert run.output_dir == f"output/{variant}_{name}"


@pytest.mark.parametrize("prefix", ["", "tiny_"])
def test_steps_and_ablations_fit_together(prefix):
    step1 = load_config(FOLDER / f"{prefix}step1.yaml")
    step2 = load_config(FOLDER / f"{prefix}step2.yaml")
    # the documented ablation commands (docs/training.md): overrides, not copied files
    step1_only = load_config(FOLDER / f"{prefix}step1.yaml", ["run.output_dir=output/step1_only"])
    step2_only = load_config(FOLDER / f"{prefix}step2.yaml", ["model.ckpt=null", "run.output_dir=output/step2_only"])
    assert step2.model.ckpt == f"{step1.run.output_dir}/checkpoint_last.pth"
    assert set(step1.datasets) == set(step1_only.datasets) == {"skincon_concepts"}
    assert set(step2.datasets) == set(step2_only.datasets) == {"dermnet", "skin_notes"}
    assert step2_only.model.ckpt is None
    assert step1.run.prompt_path == "prompts/step1.txt" and step2.run.prompt_path == "prompts/step2.txt"
    assert len({c.run.output_dir for c in (step1, step2, step1_only, step2_only)}) == 4
    same_run = lambda c: OmegaConf.to_container(c.run) | {"output_dir": None}  # noqa: E731
    assert same_run(step1) == same_run(step1_only)
    assert same_run(step1) | {"prompt_path": None} == same_run(step2) | {"prompt_path": None}  # one schedule


@pytest.mark.parametrize("step", ("step1", "step2"))
def test_fast_path_is_the_paper_recipe_with_the_speed_settings(step):
    """step<N>_fast = step<N> + cached features (eval transform), bf16, packed batches (docs/performance.md)."""
    plain, fast = load_config(FOLDER / f"{step}.yaml"), load_config(FOLDER / f"{step}_fast.yaml")
    run = build_run_config(fast.run)
    assert run.cache_frozen_features and run.pack_sequences and run.precision == "bf16"
    assert model_config(fast.model).llm_precision == "bf16"
    assert {name: block.vis_processor.name for name, block in fast.datasets.items()} == {
        name: "blip2_image_eval" for name in plain.datasets}
    speed = {"precision", "cache_frozen_features", "pack_sequences", "pack_max_tokens", "optimizer_impl",
             "output_dir"}
    assert {k: v for k, v in fast.run.items() if k not in speed} == {k: v for k, v in plain.run.items()
                                                                        if k not in speed}
    if step == "step2":
        assert fast.model.ckpt == "output/llama2_13b_chat_step1_fast/checkpoint_last.pth"


def test_the_public_step2_config_is_step2_without_notes_and_with_validation():
    public, step2 = load_config(FOLDER / "step2_public.yaml"), load_config(FOLDER / "step2.yaml")
    assert public.datasets.skin_notes is None and public.datasets.dermnet == step2.datasets.dermnet
    assert public.validation.dermnet_val.storage == "data/prepared/dermnet_val"
    assert public.model.ckpt == step2.model.ckpt  # from the step-1 projection, as step 2
    assert OmegaConf.to_container(public.run) == {**OmegaConf.to_container(step2.run),
                                                  "output_dir": "output/llama2_13b_chat_step2_public"}


def test_device_auto_is_the_default_of_the_full_configs():
    from skingpt4.runners.config import RunConfig

    assert RunConfig().device == "auto"
    for name in ("step1", "step2", "step2_public"):
        assert build_run_config(load_config(FOLDER / f"{name}.yaml").run).device == "auto"
