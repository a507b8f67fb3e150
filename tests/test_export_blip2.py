"""Export to a transformers BLIP-2 directory: transformers' Blip2ForConditionalGeneration loaded from it gives our
logits and greedy tokens; the export loads back into our model; the served (vLLM) placement is measured; what the
format cannot hold is refused in one line."""
import json

import jinja2
import pytest
import torch

from skingpt4.export import blip2_prompt_text, chat_template_jinja, served_prompt_text
from skingpt4.export.blip2 import PROJECTION_FILE
from skingpt4.export.cli import main as export_main
from skingpt4.export.compare import compare
from skingpt4.models import build_model
from skingpt4.prompting import CLINICAL_PROMPTS
from skingpt4.prompting.templates import IMAGE_TAG
from skingpt4.common import registry

CFG = "eval_configs/skingpt4_tiny.yaml"
TOL = 1e-4


@pytest.fixture
def exported(tiny_export):
    return tiny_export


@pytest.fixture(scope="module")
def source_model(tiny_assets):
    return build_model({"variant": "tiny", "ckpt": str(tiny_assets / "projection.pth")})


def test_transformers_blip2_equals_ours(exported, source_model, tiny_assets):
    from PIL import Image

    image = Image.new("RGB", (300, 240), (236, 192, 158))
    image.paste((200, 30, 30), (80, 60, 200, 180))
    pixels = registry.processors.get("blip2_image_eval")(image_size=224)(image)[None]
    figures = compare(source_model, str(exported), pixels, CLINICAL_PROMPTS[0], new_tokens=12, image=image)
    print(json.dumps(figures, indent=1))  # the figures docs/scaling.md quotes (pytest -s)
    assert figures["exact"]["logits_max_abs_diff"] <= TOL
    assert figures["exact"]["greedy_tokens_equal"]
    assert figures["pixels"]["max_abs_diff"] <= 1e-5  # the exported image processor is our eval transform
    served = figures["served"]
    # vLLM's placement: 32 image tokens, BOS, the text without <ImageHere>; measured, not equal
    assert served["prompt_tokens_served"] != served["prompt_tokens_ours"] or not served["text_tokens_equal"]
    assert served["next_token_logits_max_abs_diff"] > 0


def test_export_files_and_round_trip(exported, source_model, tiny_assets):
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["Blip2ForConditionalGeneration"]
    assert config["num_query_tokens"] == 32 and config["text_config"]["model_type"] == "llama"
    info = json.loads((exported / "skingpt4_export.json").read_text())
    vocab = len(source_model.tokenizer)  # the image token is added after the tiny vocabulary
    assert config["image_token_index"] == info["image_token_id"] == vocab
    tokenizer = json.loads((exported / "tokenizer.json").read_text())
    assert any(t["content"] == "<image>" and t["id"] == vocab for t in tokenizer["added_tokens"])
    assert (exported / "model.safetensors").is_file() and (exported / "processor_config.json").is_file()
    # back: vision + Q-Former + query tokens from the export, the projection from the exported checkpoint
    back = build_model({"variant": "tiny", "vit_model": None, "q_former_model": None, "blip2_hf_dir": str(exported),
                        "ckpt": str(exported / PROJECTION_FILE)})
    images = torch.randn(2, 3, 224, 224)
    assert torch.equal(back.encode_image(images), source_model.encode_image(images))


def test_chat_template_renders_the_served_prompt():
    history = [("q1?", "a1."), ("q2?", "a2.")]
    for name in registry.chat_templates.names():
        template = registry.chat_templates.get(name)
        messages = [m for q, a in history for m in ({"role": "user", "content": q},
                                                     {"role": "assistant", "content": a})]
        messages.append({"role": "user", "content": "q3?"})
        rendered = jinja2.Template(chat_template_jinja(template)).render(messages=messages, bos_token="<s>")
        assert rendered == served_prompt_text(template, history, "q3?", "<s>"), name
        assert IMAGE_TAG not in rendered and "<Img></Img> q1?" in rendered
    vicuna = registry.chat_templates.get("vicuna_v0")
    text = blip2_prompt_text(vicuna, (), "q?", 32)
    assert text.count("<image>") == 32 and "<Img>" + "<image>" * 32 + "</Img> q?" in text


def test_export_refusals_are_one_line(tiny_assets, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert export_main(["--cfg-path", CFG, "--out", str(tmp_path / "full")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert export_main(["--cfg-path", CFG, "--out", str(tmp_path / "lora"), "--options", "model.lora.r=2"]) == 2
    err = capsys.readouterr().err
    assert "--merge" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "lora").exists()
