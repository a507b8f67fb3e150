"""Each bad weight path / checkpoint / config gives the promised message."""
import socket

import pytest
import torch

from skingpt4.common.config import ConfigError
from skingpt4.models import build_model
from skingpt4.models.checkpoints import CheckpointError


def build(**overrides):
    return build_model({"variant": "tiny", **overrides})


def test_missing_llm_path_names_the_key(tiny_assets):
    with pytest.raises(ConfigError, match=r"config key 'model.llm_model': no such directory '/nope/llama'; put the "
                                          r"local directory of a Llama-family LLM in transformers format"):
        build(llm_model="/nope/llama")


def test_missing_vit_and_qformer_paths_name_the_key(tiny_assets):
    with pytest.raises(ConfigError, match=r"config key 'model.vit_model': no such file '/nope/eva.pth'; put "
                                          r"eva_vit_g.pth"):
        build(vit_model="/nope/eva.pth")
    with pytest.raises(ConfigError, match=r"config key 'model.q_former_model' is not set; put "
                                          r"blip2_pretrained_flant5xxl.pth"):
        build(q_former_model=None)


def test_wrong_size_projection(tiny_assets, tmp_path):
    torch.save({"model": {"llama_proj.weight": torch.zeros(4096, 64), "llama_proj.bias": torch.zeros(4096)}},
               tmp_path / "7b.pth")
    with pytest.raises(CheckpointError, match=r"checkpoint projects to 4096 \(variant vicuna_7b\) but llm_model has hidden "
                                              r"size 64"):
        build(ckpt=str(tmp_path / "7b.pth"))


def test_minigpt4_llama2_variant_without_qformer_is_named(tiny_assets, tmp_path):
    torch.save({"model": {"llama_proj.weight": torch.zeros(64, 5632), "llama_proj.bias": torch.zeros(64)}},
               tmp_path / "v2.pth")
    with pytest.raises(CheckpointError, match=r"MiniGPT-4 Llama-2 checkpoint without Q-Former.*does not support"):
        build(ckpt=str(tmp_path / "v2.pth"))


def test_checkpoint_without_projection(tiny_assets, tmp_path):
    torch.save({"model": {"some_other.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"has no projection: expected 'llama_proj.weight' .*found keys: "
                                              r"some_other.weight"):
        build(ckpt=str(tmp_path / "other.pth"))


def test_blip2_file_that_supplies_nothing_expected(tiny_assets, tmp_path):
    torch.save({"model": {"ln_vision.weight": torch.ones(64), "ln_vision.bias": torch.zeros(64),
                          "Qformer.bert.renamed.x": torch.zeros(2)}}, tmp_path / "bad_blip2.pth")
    with pytest.raises(CheckpointError, match=r"supplies none of the Q-Former weights: expected keys like "):
        build(q_former_model=str(tmp_path / "bad_blip2.pth"))


def test_architecture_mismatch_names_key_and_shapes(tiny_assets):
    with pytest.raises(CheckpointError, match=r"'blocks.0.attn.proj.bias' has shape \(64,\) but the vision "
                                              r"encoder expects \(96,\) \(does the config describe the architecture"):
        build(vision={"width": 96})


def test_unpicklable_file_is_refused_not_executed(tiny_assets, tmp_path):
    torch.save({"model": {"llama_proj.weight": torch.zeros(1)}, "obj": socket.AF_INET}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match=r"^config key 'model.ckpt': checkpoint '.*pickled.pth' was refused: it "
                                              r"asks to import and call 'socket.AddressFamily'.* not a safe checkpoint"):
        build(ckpt=str(tmp_path / "pickled.pth"))


def test_unknown_config_key_lists_valid_keys(tiny_assets):
    with pytest.raises(ConfigError, match=r"unknown key 'model.llm_modle' \(did you mean 'llm_model'\?\); valid "
                                          r"keys: .*max_txt_len"):
        build(llm_modle="/x")
    with pytest.raises(ConfigError, match=r"unknown key 'model.vision.widht' \(did you mean 'width'\?\)"):
        build(vision={"widht": 3})


def test_precision_and_quantization_need_cuda(tiny_assets):
    with pytest.raises(ConfigError, match=r"model.llm_precision=fp16 needs a CUDA device; on CPU use bf16 or fp32"):
        build(llm_precision="fp16")
    with pytest.raises(ConfigError, match=r"model.llm_quantization=4bit needs a CUDA GPU \(bitsandbytes\)"):
        build(llm_quantization="4bit")
    with pytest.raises(ConfigError, match=r"unknown model.variant 'tinny'; did you mean 'tiny'"):
        build_model({"variant": "tinny"})


def test_bf16_on_cpu_runs(tiny_assets):
    model = build(vit_precision="bf16", llm_precision="bf16")
    embeds = model.encode_image(torch.randn(1, 3, 224, 224))
    assert embeds.dtype == torch.bfloat16 and embeds.shape == (1, 32, 64)
