"""Round trips: LAVIS, transformers-BLIP-2 and SkinGPT-4 .pth forms load into our model and give the same
outputs; our saved checkpoint reloads bit-exactly and is in the original `{"model": ...}` format."""
import pytest
import torch

from skingpt4.models import build_model
from skingpt4.models.checkpoints import save_checkpoint, read_checkpoint

IMAGES = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(tiny_assets):
    torch.manual_seed(0)
    model = build_model({"variant": "tiny"})
    with torch.no_grad():
        model.llama_proj.weight.normal_(0, 0.1)
        model.llama_proj.bias.normal_(0, 0.1)
    return model


def test_saved_checkpoint_is_original_format_and_reloads_bit_exactly(reference, tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pth", reference.trainable_state_dict(), epoch=3)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"model", "epoch"} and saved["epoch"] == 3
    assert set(saved["model"]) == {"llama_proj.weight", "llama_proj.bias"}  # trainable parameters only
    reloaded = build_model({"variant": "tiny", "ckpt": str(path)})
    for name, value in reference.trainable_state_dict().items():
        assert torch.equal(reloaded.trainable_state_dict()[name], value)
    assert torch.equal(reloaded.encode_image(IMAGES), reference.encode_image(IMAGES))
    assert any("stored as 'llama_proj'" in str(r) for r in reloaded.load_reports)


@pytest.mark.parametrize("prefix", ["llama_proj", "llm_proj", "language_projection"])
def test_projection_under_every_known_name(reference, tmp_path, prefix):
    """MiniGPT-4 files (with the buffers they carry), older SkinGPT-4 files and transformers BLIP-2 names."""
    state = {f"{prefix}.weight": reference.llama_proj.weight.detach().clone(),
             f"{prefix}.bias": reference.llama_proj.bias.detach().clone(),
             "llama_model.model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4),
             "Qformer.bert.embeddings.position_ids": torch.arange(8)[None]}
    torch.save({"model": state, "optimizer": {}, "config": {"model": {"arch": "mini_gpt4"}}, "scaler": None,
                "epoch": 4}, tmp_path / "minigpt4.pth")
    model = build_model({"variant": "tiny", "ckpt": str(tmp_path / "minigpt4.pth")})
    assert torch.equal(model.encode_image(IMAGES), reference.encode_image(IMAGES))
    report = [r for r in model.load_reports if "projection" in r.what][0]
    assert report.loaded == ["bias", "weight"] and len(report.ignored) == 2


def test_lavis_form_with_visual_encoder_inside(reference, tiny_assets, tmp_path):
    """A BLIP-2 LAVIS checkpoint that also carries `visual_encoder.*` is enough without eva_vit_g.pth."""
    blip2 = read_checkpoint(tiny_assets / "blip2_pretrained.pth")["model"]
    eva = read_checkpoint(tiny_assets / "eva_vit_g.pth")
    combined = {**blip2, **{f"visual_encoder.{k}": v for k, v in eva.items()}}
    torch.save({"model": combined}, tmp_path / "blip2_with_vit.pth")
    model = build_model({"variant": "tiny", "vit_model": None,
                                  "q_former_model": str(tmp_path / "blip2_with_vit.pth")})
    assert torch.equal(model.encode_queries(IMAGES), reference.encode_queries(IMAGES))


def test_load_reports_name_what_was_skipped(reference):
    text = "\n".join(str(r) for r in reference.load_reports)
    assert "loaded vision encoder" in text and "blocks.2." in text  # the unused last EVA block
    assert "loaded Q-Former" in text and "t5_proj" in text or "Qformer.bert.embeddings" in text
    assert "query tokens" in text
