"""The prompt format has one owner (docs/prompts.md): training and chat lay a conversation out through the same
function and embed it the same way, so for the same conversation they see identical token ids and image positions
and the LLM gives equal logits at the prompt positions; and a new LLM family (a tiny Llama-3-style variant with
no unk token, its own special tokens and chat format) is one variant YAML plus one template registration: it
trains and chats."""
import json

import pytest
import torch
from PIL import Image

from skingpt4.chat import ChatEngine, DecodingConfig
from skingpt4.common import registry
from skingpt4.models import build_model
from skingpt4.models.variant_files import variant_files
from skingpt4.prompting import IMAGE_SLOT

from training_helpers import projection, train

HISTORY = [("Could you describe the skin disease in this image for me?", "It looks like eczema with scale.")]
QUESTION = "What treatment and medication should be recommended for this case?"
ANSWER = "A moisturiser and a mild topical steroid."


def photo() -> Image.Image:
    img = Image.new("RGB", (300, 220), (190, 120, 100))
    img.paste((120, 60, 50), (100, 80, 180, 150))
    return img


# A template whose special tokens only its own tokenizer has is tried on the variant that has that tokenizer.
TEMPLATE_VARIANT = {"llama3_chat": "tiny_llama3"}


@pytest.mark.parametrize("template", sorted(registry.chat_templates))  # every registered template
def test_training_forward_and_chat_engine_see_the_same_conversation(tiny_assets, request, template):
    variant = TEMPLATE_VARIANT.get(template, "tiny")
    if variant == "tiny_llama3":
        request.getfixturevalue("llama3_assets")
    torch.manual_seed(0)
    model = build_model({"variant": variant, "template": template})
    engine = ChatEngine(model)
    conv = engine.new_conversation(photo())
    conv.history = list(HISTORY)
    turn = engine._prepare(conv, QUESTION, DecodingConfig(do_sample=False), use_cache=False)  # what generate reads

    lay = model.layout(conv.history, QUESTION, answer=ANSWER, style="chat")  # the training side of the same chat
    inputs = model.build_inputs(conv.image_embeds, [lay])
    prompt = lay.prompt_length
    assert lay.tokens[:prompt] == turn.tokens
    assert lay.image_positions == [i for i, t in enumerate(turn.tokens) if t == IMAGE_SLOT]
    assert inputs["image_mask"][0].nonzero().flatten().tolist() == lay.image_positions
    assert lay.tokens[0] == model.tokenizer.bos_token_id and len(lay.image_positions) == 32
    assert lay.labels[prompt:] == lay.tokens[prompt:] and set(lay.labels[:prompt]) == {-100}
    with torch.no_grad():
        trained = model.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]).logits
        chatted = model.llm(inputs_embeds=turn.embeds).logits
    torch.testing.assert_close(trained[0, :prompt], chatted[0], rtol=0, atol=1e-5)


def test_the_training_style_is_the_original_training_text(tiny_model):
    line = "<Img><ImageHere></Img> What's wrong with my skin?"
    text = tiny_model.template.render_training(line) + "Psoriasis." + tiny_model.template.end_sym
    assert text == "###Human: <Img><ImageHere></Img> What's wrong with my skin? ###Assistant: Psoriasis.###"
    lay = tiny_model.layout((), line, answer="Psoriasis.", style="train")
    tok = tiny_model.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    assert lay.tokens == ([tok.bos_token_id] + ids("###Human: <Img>") + [IMAGE_SLOT] * 32
                          + ids("</Img> What's wrong with my skin? ###Assistant: ") + ids("Psoriasis.###"))


# ------------------------------------------------------------------------------ a new LLM family: Llama-3 style
@pytest.fixture(scope="module")
def llama3_assets(tiny_assets):
    from skingpt4.tiny.llama3 import build_tiny_llama3

    if not (tiny_assets / "llm_llama3" / "config.json").is_file():
        build_tiny_llama3(tiny_assets / "llm_llama3")
    return tiny_assets


def test_the_llama3_variant_is_found_and_its_tokenizer_quirks_apply(llama3_assets):
    assert "tiny_llama3" in variant_files()  # discovered from the folder: no list to edit
    model = build_model({"variant": "tiny_llama3"})
    tok = model.tokenizer
    assert tok.unk_token is None and tok.pad_token == "<|finetune_right_pad_id|>"
    assert tok.pad_token_id not in (tok.eos_token_id, tok.bos_token_id)
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|eot_id|>"
    lay = model.layout((), "<Img><ImageHere></Img> What's wrong with my skin?", answer="Acne.", style="train")
    header = tok.convert_tokens_to_ids(["<|start_header_id|>", "<|end_header_id|>"])
    assert lay.tokens[0] == tok.bos_token_id and lay.tokens[1] == header[0] and lay.tokens[-1] == tok.eos_token_id
    assert lay.tokens.count(tok.eos_token_id) == 2  # the end of the question and of the answer


def test_the_llama3_variant_trains_a_few_steps_and_chats(llama3_assets, train_data, tmp_path):
    torch.manual_seed(42)
    fresh = build_model({"variant": "tiny_llama3"}).state_dict()
    result, model = train(train_data, tmp_path / "run", iters_per_epoch=6, log_freq=2,
                          extra=["model.variant=tiny_llama3"])
    assert result.status == "finished" and result.step == 6
    changed = sorted(k for k, v in model.state_dict().items() if not torch.equal(fresh[k], v))
    assert changed == ["llama_proj.bias", "llama_proj.weight"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert set(projection(result.checkpoint)) == {"llama_proj.weight", "llama_proj.bias"}

    engine = ChatEngine(build_model({"variant": "tiny_llama3", "ckpt": str(result.checkpoint)}))
    conv = engine.new_conversation(photo())
    decoding = DecodingConfig(do_sample=False, max_new_tokens=6)
    for question in (HISTORY[0][0], QUESTION):
        reply = engine.ask(conv, question, decoding)
        assert isinstance(reply, str) and conv.last_turn.new_tokens >= 1
    assert engine.prompt_text(conv, "Why?") == (
        "<|start_header_id|>user<|end_header_id|>\n\n<Img><ImageHere></Img> " + HISTORY[0][0]
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" + conv.history[0][1] + "<|eot_id|>"
        + "<|start_header_id|>user<|end_header_id|>\n\n" + QUESTION
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" + conv.history[1][1] + "<|eot_id|>"
        + "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert conv.last_turn.reused_tokens > 0  # the KV cache is reused across turns with the new format too

