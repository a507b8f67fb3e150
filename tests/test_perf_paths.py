"""The speed paths compute what the plain paths compute (docs/performance.md): packed training batches give the
padded batch's loss and gradient, SDPA equals eager attention, every AdamW kernel makes the same update, the
static-cache and compiled decoders give the same greedy tokens, and their settings are checked like any other."""
import types

import pytest
import torch
from omegaconf import OmegaConf

from skingpt4.chat import ChatEngine, DecodingConfig
from skingpt4.chat.build import read_chat_config
from skingpt4.common.config import ConfigError
from skingpt4.models import build_model
from skingpt4.models.packing import pack_rows, packed_position_ids
from skingpt4.runners import build_run_config
from skingpt4.runners import optim

LINE = "<Img><ImageHere></Img> Could you describe the medical concepts of skin disease in this image for me?"
ANSWERS = ["This lesion shows plaque and scale.", "A nodule.",
           "This lesion shows erythema, crust and erosion, papule, pustule, nodule, macule, patch, ulcer and scar.",
           "The skin disease in this image is likely psoriasis and lichen planus, or dermatitis.", "Herpes."]
GREEDY = DecodingConfig(do_sample=False, max_new_tokens=10)
QUESTIONS = ["Could you describe the skin disease in this image for me?",
             "Please provide a paragraph listing additional features you observed in the image.", "And?"]


# ------------------------------------------------------------------------------------------------ packing
def test_pack_rows_places_every_sample_once_within_the_capacity():
    lengths = [180, 40, 120, 75, 200, 33, 160, 90, 600]
    rows = pack_rows(lengths, 400)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert [8] in rows  # longer than the capacity: a row of its own
    assert all(sum(lengths[i] for i in row) <= 400 for row in rows if row != [8])
    assert len(rows) == 1 + 3  # 1098 positions that fit need 3 rows of 400
    assert rows == pack_rows(lengths, 400)
    positions = packed_position_ids([[0, 1]], [3, 2])
    assert positions.tolist() == [[0, 1, 2, 0, 1]]
    assert packed_position_ids([[0], [1]], [3, 1]).tolist() == [[0, 1, 2], [0, 0, 1]]  # padding: its own sample


def _loss_and_grad(model, samples, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(samples, **kwargs)
    out["loss"].backward()
    return out, model.llama_proj.weight.grad.clone()


def test_packed_batch_gives_the_padded_loss_and_gradient(tiny_model):
    torch.manual_seed(0)
    queries = torch.randn(len(ANSWERS), 32, tiny_model.cfg.qformer.hidden_size)
    samples = {"queries": queries, "text_input": ANSWERS, "prompt": [LINE, None, LINE, LINE, None]}
    padded, padded_grad = _loss_and_grad(tiny_model, samples)
    for capacity in (4096, 160):  # one row / several rows
        packed, packed_grad = _loss_and_grad(tiny_model, samples, pack_tokens=capacity)
        assert packed["num_answer_tokens"] == padded["num_answer_tokens"]
        assert packed["positions"] < padded["positions"] and packed["padding_fraction"] < padded["padding_fraction"]
        assert abs(float(packed["loss"].detach()) - float(padded["loss"].detach())) <= 1e-5
        torch.testing.assert_close(packed_grad, padded_grad, rtol=1e-4, atol=1e-6)
    # the block mask matters: the same row run as one causal sequence (positions not restarting) differs
    layouts = [tiny_model.layout((), p, answer=a, style="train") for p, a in zip(samples["prompt"], ANSWERS)]
    with torch.no_grad():
        inputs = tiny_model.build_inputs(tiny_model.project(queries), layouts, pack_tokens=4096)
        packed_logits = tiny_model.llm(inputs_embeds=inputs["inputs_embeds"], position_ids=inputs["position_ids"],
                                       use_cache=False).logits
        leaky_logits = tiny_model.llm(inputs_embeds=inputs["inputs_embeds"], use_cache=False).logits
    assert float((packed_logits - leaky_logits).abs().max()) > 1e-3
    tiny_model.zero_grad(set_to_none=True)


def test_fast_training_path_trains_like_the_default(train_data, tiny_assets, tmp_path):
    """train.py with cached features, packed batches and fused AdamW ends with the default run's projection."""
    from training_helpers import assert_same, projection, train

    eval_transform = ["datasets.skincon_concepts.vis_processor.name=blip2_image_eval"]
    default, _ = train(train_data, tmp_path / "default", extra=eval_transform)
    fast, _ = train(train_data, tmp_path / "fast", extra=eval_transform, cache_frozen_features=True,
                    pack_sequences=True, pack_max_tokens=256, optimizer_impl="fused")
    assert_same(projection(default.checkpoint), projection(fast.checkpoint), atol=1e-5)


# ------------------------------------------------------------------------------------------------ attention
def test_sdpa_and_eager_attention_agree(tiny_model):
    eager = build_model({"variant": "tiny", "attn_implementation": "eager"})
    assert eager.llm.config._attn_implementation == "eager" and tiny_model.llm.config._attn_implementation == "sdpa"
    assert not eager.visual_encoder.blocks[0].attn.fused_attn and tiny_model.visual_encoder.blocks[0].attn.fused_attn
    assert eager.qformer.config._attn_implementation == "eager"
    eager.llama_proj.load_state_dict(tiny_model.llama_proj.state_dict())
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(eager.encode_image(images), tiny_model.encode_image(images), rtol=1e-5, atol=1e-5)
        samples = {"image": images, "text_input": ANSWERS[:2], "prompt": [LINE, LINE]}
        torch.testing.assert_close(eager(samples)["loss"], tiny_model(samples)["loss"], rtol=1e-5, atol=1e-6)
        layouts = [tiny_model.layout((), LINE, answer=a, style="train") for a in ANSWERS[:2]]
        inputs = tiny_model.build_inputs(tiny_model.encode_image(images), layouts)
        logits = [m.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]).logits
                  for m in (eager, tiny_model)]
        torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ AdamW
def test_adamw_kernel_choice():
    cpu = [torch.zeros(2)]
    cuda = [types.SimpleNamespace(device=torch.device("cuda", 0), is_floating_point=lambda: True)]
    assert optim.adamw_kernel("auto", cpu) == {"fused": None, "foreach": None}  # torch's default: CPU numbers kept
    assert optim.adamw_kernel("auto", cuda) == {"fused": True, "foreach": False}
    assert optim.adamw_kernel("for_loop", cuda) == {"fused": False, "foreach": False}
    assert optim.adamw_kernel("fused", cpu)["fused"] == optim.fused_supported(torch.device("cpu"))


def test_fused_on_a_device_without_the_kernel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(optim, "fused_supported", lambda device: False)
    with pytest.raises(ConfigError, match="run.optimizer_impl=fused: this torch has no fused AdamW for cpu"):
        optim.adamw_kernel("fused", [torch.zeros(2)])


@pytest.mark.skipif(not optim.fused_supported(torch.device("cpu")), reason="no fused AdamW on this torch's CPU")
def test_adamw_kernels_make_the_same_update(tiny_model):
    module = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.LayerNorm(8))
    start = {k: v.clone() for k, v in module.state_dict().items()}
    grads = [[torch.randn(p.shape, generator=torch.Generator().manual_seed(10 * s + i))
              for i, p in enumerate(module.parameters())] for s in range(5)]
    finals, states = {}, {}
    for impl in ("for_loop", "foreach", "fused"):
        module.load_state_dict(start)
        opt = optim.build_optimizer(module, 1e-2, 0.05, (0.9, 0.999), impl)
        for step_grads in grads:
            for p, g in zip(module.parameters(), step_grads):
                p.grad = g.clone()
            opt.step()
        finals[impl], states[impl] = {k: v.clone() for k, v in module.state_dict().items()}, opt.state_dict()
    for impl in ("foreach", "fused"):
        for key in start:
            torch.testing.assert_close(finals[impl][key], finals["for_loop"][key], rtol=1e-6, atol=1e-7)
    # a checkpoint written by the fused kernel resumes on the configured one
    resumed = optim.build_optimizer(module, 1e-2, 0.05, (0.9, 0.999), "for_loop")
    resumed.load_state_dict(states["fused"])
    assert resumed.param_groups[0]["fused"] is True  # what torch restores ...
    optim.set_kernel(resumed, {"fused": False, "foreach": False})
    assert resumed.param_groups[0]["fused"] is False  # ... and what the runner re-applies


# ------------------------------------------------------------------------------------------------ decoding
def _conversation(engine, image, batch=1):
    convs = [engine.new_conversation(image) for _ in range(batch)]
    replies = []
    for question in QUESTIONS:
        if batch == 1:
            replies.append(engine.ask(convs[0], question, GREEDY))
        else:
            replies.append(engine.ask_batch(convs, [question] * batch, GREEDY))
    return replies, [c.last_turn.reply_ids for c in convs], convs[0].last_turn.reused_tokens


def test_static_and_compiled_decoding_give_the_same_greedy_tokens(tiny_model):
    image = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(5))
    reference = _conversation(ChatEngine(tiny_model), image)
    assert reference[2] > 0  # the KV cache was reused
    assert _conversation(ChatEngine(tiny_model, kv_cache="static"), image) == reference
    # torch.compile through dynamo; the "eager" backend keeps the test fast (inductor: the acceptance run)
    compiled = ChatEngine(tiny_model, kv_cache="static", compile_decoding=True, compile_backend="eager")
    assert _conversation(compiled, image) == reference
    batch_reference = _conversation(ChatEngine(tiny_model), image, batch=2)
    assert _conversation(ChatEngine(tiny_model, kv_cache="static"), image, batch=2) == batch_reference


def test_streamer_sees_the_generated_ids(tiny_model):
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.parts = []

        def put(self, value):
            self.parts.append(value.reshape(-1).tolist())

        def end(self):
            pass

    engine, collect = ChatEngine(tiny_model), Collect()
    conv = engine.new_conversation(torch.zeros(3, 224, 224))
    engine.ask(conv, QUESTIONS[0], GREEDY, streamer=collect)
    assert collect.parts[0] == [] and sum(collect.parts[1:], []) == conv.last_turn.reply_ids


# ------------------------------------------------------------------------------------------------ settings
def test_speed_settings_are_checked(tmp_path, tiny_assets):
    with pytest.raises(ConfigError, match="model.attn_implementation=flash: choose one of sdpa, eager, "
                                          "flash_attention_2"):
        build_model({"variant": "tiny", "attn_implementation": "flash"})
    with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA device"):
        build_model({"variant": "tiny", "attn_implementation": "flash_attention_2"})
    with pytest.raises(ConfigError, match="run.optimizer_impl must be one of auto, fused, foreach, for_loop"):
        build_run_config(OmegaConf.create({"optimizer_impl": "apex"}))
    with pytest.raises(ConfigError, match="run.pack_max_tokens must be >= 1, got 0"):
        build_run_config(OmegaConf.create({"pack_max_tokens": 0}))
    cfg = tmp_path / "chat.yaml"
    cfg.write_text("model: {variant: tiny}\nrun: {kv_cache: paged}\n")
    with pytest.raises(ConfigError, match="run.kv_cache=paged: choose one of dynamic, static"):
        read_chat_config(cfg)
    cfg.write_text("model: {variant: tiny}\nrun: {compile_decoding: true}\n")
    with pytest.raises(ConfigError, match="run.compile_decoding=true needs run.kv_cache=static"):
        read_chat_config(cfg)
    with pytest.raises(ValueError, match="compile_decoding needs kv_cache='static'"):
        ChatEngine(types.SimpleNamespace(), compile_decoding=True)
