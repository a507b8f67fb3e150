"""Our vision encoder + ln_vision + Q-Former against transformers' Blip2VisionModel + Blip2QFormerModel, with the
same random weights moved between the two by our converters, in both directions."""
import torch
from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2VisionConfig,
                          LlamaConfig)

from skingpt4.models import build_model
from skingpt4.models.eva_vit import build_eva_vit, hf_vision_to_ours, ours_to_hf_vision
from skingpt4.models.qformer import build_qformer, lavis_to_ours, ours_to_lavis
from skingpt4.tiny.assets import TINY_QFORMER, TINY_VISION

TOL = 1e-5


def hf_blip2(seed: int = 0) -> Blip2ForConditionalGeneration:
    """A tiny transformers BLIP-2 with the tiny SkinGPT-4 vision/Q-Former shapes and random (non-trivial) weights."""
    torch.manual_seed(seed)
    v, q = TINY_VISION, TINY_QFORMER
    config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=v.width, intermediate_size=v.mlp_hidden,
                                        num_hidden_layers=v.depth, num_attention_heads=v.num_heads,
                                        image_size=v.image_size, patch_size=v.patch_size, layer_norm_eps=1e-6),
        qformer_config=Blip2QFormerConfig(hidden_size=q.hidden_size, num_hidden_layers=q.num_layers,
                                          num_attention_heads=q.num_heads, intermediate_size=q.intermediate_size,
                                          encoder_hidden_size=v.width, cross_attention_frequency=2),
        text_config=LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2),
        num_query_tokens=q.num_query_tokens,
    )
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "qkv.bias" in name:  # EVA has no key bias: keep the middle third zero
                p.copy_(torch.cat([torch.randn(v.width), torch.zeros(v.width), torch.randn(v.width)]) * 0.1)
            elif not name.startswith("language_model"):
                p.copy_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.1) + (1.0 if "norm" in name.lower() and
                                                                                   name.endswith("weight") else 0.0))
    # BLIP-2's ln_vision uses eps 1e-5; transformers uses the blocks' 1e-6 for post_layernorm. Match the original.
    model.vision_model.post_layernorm.eps = 1e-5
    return model


def hf_queries(model, images):
    with torch.no_grad():
        feats = model.vision_model(pixel_values=images).last_hidden_state
        query = model.query_tokens.expand(images.shape[0], -1, -1)
        return model.qformer(query_embeds=query, encoder_hidden_states=feats,
                             encoder_attention_mask=torch.ones(feats.shape[:2], dtype=torch.long)).last_hidden_state


def test_hf_to_ours_matches_transformers():
    hf = hf_blip2()
    ours_vit = build_eva_vit(TINY_VISION).eval()
    ours_vit.load_state_dict(hf_vision_to_ours(hf.vision_model.state_dict()), strict=False)  # k_bias: zero buffer
    assert set(ours_vit.state_dict()) - set(hf_vision_to_ours(hf.vision_model.state_dict())) == set()
    ours_qf = build_qformer(TINY_QFORMER, TINY_VISION.width).eval()
    ours_qf.load_state_dict(hf.qformer.state_dict(), strict=True)

    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = ours_vit.forward_features(images)
        ours = ours_qf(query_embeds=hf.query_tokens.expand(2, -1, -1), encoder_hidden_states=feats,
                       encoder_attention_mask=torch.ones(feats.shape[:2], dtype=torch.long)).last_hidden_state
        assert (feats - hf.vision_model(pixel_values=images).last_hidden_state).abs().max() <= TOL
    reference = hf_queries(hf, images)
    assert ours.shape == (2, 32, TINY_QFORMER.hidden_size)
    assert reference.abs().mean() > 0.1  # non-trivial outputs
    assert (ours - reference).abs().max() <= TOL


def test_ours_to_hf_matches_and_round_trips():
    torch.manual_seed(1)
    ours_vit = build_eva_vit(TINY_VISION).eval()
    with torch.no_grad():
        for name, p in ours_vit.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf = hf_blip2(seed=2)
    hf.vision_model.load_state_dict(ours_to_hf_vision(ours_vit.state_dict()), strict=True)
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        diff = ours_vit.forward_features(images) - hf.vision_model(pixel_values=images).last_hidden_state
    assert diff.abs().max() <= TOL
    # names and values survive ours -> HF -> ours and ours -> LAVIS -> ours exactly
    back = hf_vision_to_ours(ours_to_hf_vision(ours_vit.state_dict()))
    own = {k: v for k, v in ours_vit.state_dict().items() if not k.endswith("k_bias")}
    assert back.keys() == own.keys() and all(torch.equal(back[k], own[k]) for k in own)
    qf = hf.qformer.state_dict()
    lavis = ours_to_lavis(qf)
    assert "Qformer.bert.embeddings.LayerNorm.weight" in lavis
    assert "Qformer.bert.encoder.layer.0.crossattention.self.query.weight" in lavis
    assert "Qformer.bert.encoder.layer.1.attention.self.key.bias" in lavis
    again, ignored = lavis_to_ours(lavis)
    assert ignored == [] and again.keys() == qf.keys() and all(torch.equal(again[k], qf[k]) for k in qf)


def test_skingpt4_loads_hf_snapshot_and_matches(tiny_assets, tmp_path):
    """A transformers BLIP-2 snapshot directory (safetensors) loads into SkinGPT4 without its language model and
    gives the same queries as transformers."""
    hf = hf_blip2(seed=3)
    hf.save_pretrained(tmp_path / "blip2")
    model = build_model({"variant": "tiny", "vit_model": None, "q_former_model": None,
                                  "blip2_hf_dir": str(tmp_path / "blip2")})
    images = torch.randn(2, 3, 224, 224)
    diff = model.encode_queries(images) - hf_queries(hf, images)
    assert diff.abs().max() <= TOL
    sources = [str(r) for r in model.load_reports]
    assert any("vision encoder" in s for s in sources) and any("Q-Former" in s for s in sources)
