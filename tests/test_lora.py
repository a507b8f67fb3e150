"""LoRA adapters on the frozen LLM (model.lora, PEFT): a step-2-style run changes only the projection and the
adapters; its checkpoint holds both and loads strictly into identical outputs; a resumed run is bit-exact; the
merged export equals the unmerged model; QLoRA off CUDA is a one-line error."""
import json
from pathlib import Path

import pytest
import torch

import train as train_script
from skingpt4.common.config import ConfigError, load_config
from skingpt4.export.cli import main as export_main
from skingpt4.export.compare import compare
from skingpt4.models import build_model
from skingpt4.models.checkpoints import CheckpointError

from training_helpers import STEP2, assert_same, projection

pytest.importorskip("peft")
LORA = {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]}
LORA_OPTIONS = [f"model.lora.{k}={v}" for k, v in LORA.items() if k != "target_modules"] + \
               ["model.lora.target_modules=[q_proj,v_proj,down_proj]"]


@pytest.fixture
def data(train_data, tiny_assets) -> Path:
    return train_data


def step2_lora(data, tiny_assets, out, **run):
    """A step-2-style LoRA run from the tiny projection (projection-only checkpoint: adapters start fresh)."""
    settings = {"max_epoch": 1, "iters_per_epoch": 6, "batch_size_train": 2, "log_freq": 1, "progress_bar": False,
                "tensorboard": False, "output_dir": str(out), **run}
    options = [f"datasets.dermnet.storage={data / 'dermnet'}", f"datasets.skin_notes.storage={data / 'notes'}",
               f"model.ckpt={tiny_assets / 'projection.pth'}", *LORA_OPTIONS,
               *[f"run.{k}={v}" for k, v in settings.items()]]
    return train_script.run_training(load_config(STEP2, options))


def lora_model(ckpt, **extra):
    return build_model({"variant": "tiny", "ckpt": str(ckpt), "lora": LORA, **extra})


def logits(model, seed=0):
    torch.manual_seed(seed)
    images = torch.randn(2, 3, 224, 224)
    lay = model.layout((), "What's wrong with my skin?")
    with torch.no_grad():
        embeds, attention = model.embed([lay.tokens] * 2, model.encode_image(images))
        return model.llm(inputs_embeds=embeds, attention_mask=attention).logits


def test_lora_run_changes_projection_and_adapters_only_and_reloads(data, tiny_assets, tmp_path):
    torch.manual_seed(42)  # train.py seeds with run.seed before building the model (adapter initialisation)
    fresh = lora_model(tiny_assets / "projection.pth").state_dict()
    result, model = step2_lora(data, tiny_assets, tmp_path / "run")
    trained = model.eval().state_dict()
    changed = {k for k in fresh if not torch.equal(fresh[k], trained[k])}
    adapters = {k for k in fresh if ".lora_" in k}
    assert len(adapters) == 2 * 3 * 2  # lora_A + lora_B on 3 layer kinds x 2 LLM layers
    assert changed == adapters | {"llama_proj.weight", "llama_proj.bias"}
    saved = projection(result.checkpoint)
    assert set(saved) == changed
    # save -> load (strict) -> identical outputs
    again = lora_model(result.checkpoint)
    assert torch.equal(logits(again), logits(model))
    with pytest.raises(CheckpointError, match=r"holds LoRA adapters .* set model.lora.r=4"):
        build_model({"variant": "tiny", "ckpt": str(result.checkpoint)})
    with pytest.raises(CheckpointError, match="does not match the trainable parameters"):
        lora_model(result.checkpoint, lora={**LORA, "target_modules": ["q_proj"]})
    # merged export == the unmerged model
    out = tmp_path / "export"
    assert export_main(["--cfg-path", "eval_configs/skingpt4_tiny.yaml", "--out", str(out), "--merge",
                        "--options", f"model.ckpt={result.checkpoint}", *LORA_OPTIONS]) == 0
    assert json.loads((out / "skingpt4_export.json").read_text())["merged_lora_layers"] == 6
    torch.manual_seed(1)
    figures = compare(again.eval(), str(out), torch.randn(1, 3, 224, 224), "What's wrong with my skin?", 8)
    print("merged export vs unmerged LoRA model:", figures["exact"])
    # merged adapters round in fp32: a few 1e-5 of the logits' scale (about 15 for the pretrained tiny LLM; measured
    # 1.7e-5 of it with the tiny LLM of the harder synthetic world)
    scale = max(1.0, figures["served"]["next_token_logits_scale"])
    assert figures["exact"]["logits_max_abs_diff"] <= 4e-5 * scale and figures["exact"]["greedy_tokens_equal"]


def test_lora_resume_is_bit_exact(data, tiny_assets, tmp_path):
    straight, _ = step2_lora(data, tiny_assets, tmp_path / "straight")
    stopped, _ = step2_lora(data, tiny_assets, tmp_path / "split", stop_after_iters=3)
    assert stopped.step == 3
    resumed, _ = step2_lora(data, tiny_assets, tmp_path / "split", resume_ckpt_path=str(stopped.checkpoint))
    assert resumed.step == 6
    assert_same(projection(straight.checkpoint), projection(resumed.checkpoint))  # adapter dropout included


def test_lora_config_errors(tiny_assets):
    with pytest.raises(ConfigError, match=r"target_modules: \['qkv'\] are not Linear layers of the LLM; choose"):
        build_model({"variant": "tiny", "lora": {"r": 2, "target_modules": ["qkv"]}})
    with pytest.raises(ConfigError, match=r"model.lora.dropout must be in \[0, 1\)"):
        build_model({"variant": "tiny", "lora": {"r": 2, "dropout": 1.5}})
    # QLoRA = 4-bit base + adapters: CUDA only
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        build_model({"variant": "tiny", "llm_quantization": "4bit", "lora": {"r": 2}})
