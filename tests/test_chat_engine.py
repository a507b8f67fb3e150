"""ChatEngine on the tiny random SkinGPT-4: prompt layout, greedy vs a plain reference loop, KV-cache reuse,
streaming, sampling seeds, beam search, batching with left padding, stop strings, context limits, bad input."""
import copy
import io

import pytest
import torch
from PIL import Image
from torchvision import transforms
from transformers import LlamaForCausalLM

from skingpt4.chat import ChatEngine, ChatInputError, DecodingConfig
from skingpt4.common.images import ImageError
from skingpt4.models import build_model

VICUNA_SYSTEM_TEXT = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I "
                 "provide it to you. Please answer my questions.")
QUESTIONS = ["Could you describe the skin disease in this image for me?",
             "Please provide a paragraph listing additional features you observed in the image.",
             "What treatment and medication should be recommended for this case?"]
GREEDY = dict(do_sample=False, max_new_tokens=12)


class ModelView:
    """The shared tiny model with some attributes replaced (the session fixture itself must not change)."""

    def __init__(self, model, **overrides):
        self._model = model
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        method = getattr(type(self._model), name, None)
        if callable(method) and hasattr(method, "__get__") and not isinstance(method, type):
            return method.__get__(self)  # the model's own methods, run on the view (so they see the overrides)
        return getattr(self._model, name)


def tiny_with_template(template: str):
    """The tiny model whose variant is told to use another chat template (model.template)."""
    torch.manual_seed(0)
    return build_model({"variant": "tiny", "template": template})


def photo(colour=(190, 120, 100), size=(300, 220)) -> Image.Image:
    img = Image.new("RGB", size, colour)
    img.paste((120, 60, 50), (100, 80, 180, 150))  # a "lesion"
    return img


def reference_image_embeds(model, img):
    # docs/model.md eval processing written out with torchvision, independent of the processors package
    pixels = transforms.Compose([
        transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC), transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])(img)
    return model.encode_image(pixels[None])


def reference_embeds(model, image_embeds, prompt):
    """docs/prompts.md layout: [BOS | text before <ImageHere> | image | text after], segments without special tokens."""
    before, after = prompt.split("<ImageHere>")
    tok = model.tokenizer

    def embed(ids):
        return model.embed_tokens(torch.tensor([ids], dtype=torch.long))

    return torch.cat([embed([tok.bos_token_id]), embed(tok(before, add_special_tokens=False).input_ids),
                      image_embeds, embed(tok(after, add_special_tokens=False).input_ids)], dim=1)


@torch.no_grad()
def reference_greedy(model, embeds, max_new_tokens, stop="###"):
    """A plain loop: run the whole sequence, take the argmax, append its embedding; no cache."""
    ids = []
    for _ in range(max_new_tokens):
        next_id = int(model.llm(inputs_embeds=embeds).logits[0, -1].argmax())
        ids.append(next_id)
        if next_id == model.tokenizer.eos_token_id or stop in model.tokenizer.decode(ids):
            break
        embeds = torch.cat([embeds, model.embed_tokens(torch.tensor([[next_id]]))], dim=1)
    return ids


@pytest.fixture(scope="module")
def model(tiny_model):
    """The tiny model with its LLM's matrices redrawn at std 0.2: at the usual init (0.02) a random LLM's next
    token hardly depends on anything but the last input, which would let layout and cache bugs pass unseen."""
    llm = copy.deepcopy(tiny_model.llm)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in llm.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return ModelView(tiny_model, llm=llm, embed_tokens=lambda ids: llm.get_input_embeddings()(ids))


@pytest.fixture(scope="module")
def engine(model):
    return ChatEngine(model)


def test_first_turn_layout_and_greedy_equal_reference_loop(engine, model):
    img = photo()
    conv = engine.new_conversation(img)
    image_embeds = reference_image_embeds(model, img)
    torch.testing.assert_close(conv.image_embeds, image_embeds)
    prompt = VICUNA_SYSTEM_TEXT + "###Human: <Img><ImageHere></Img> " + QUESTIONS[0] + "###Assistant:"
    assert engine.prompt_text(conv, QUESTIONS[0]) == prompt

    reply = engine.ask(conv, QUESTIONS[0], DecodingConfig(**GREEDY))
    expected = reference_greedy(model, reference_embeds(model, image_embeds, prompt), 12)
    assert conv.last_turn.reply_ids == expected
    # the reply is the decoded text cut at the stop string, without control characters (a random LLM emits some)
    assert reply == engine.template.clean_reply(model.tokenizer.decode(expected, skip_special_tokens=True))
    assert reply == model.tokenizer.decode(expected, skip_special_tokens=True).split("###")[0].strip().replace(
        "\x9c", "").rstrip("\ufffd")
    n_text = len(model.tokenizer(prompt.replace("<ImageHere>", ""), add_special_tokens=False).input_ids)
    assert conv.last_turn.prompt_tokens >= 1 + 32 + n_text - 2  # BOS + image + both segments (split may differ)


def test_greedy_is_deterministic(engine):
    runs = []
    for _ in range(2):
        conv = engine.new_conversation(photo())
        engine.ask(conv, QUESTIONS[0], DecodingConfig(**GREEDY))
        runs.append(conv.last_turn.reply_ids)
    assert runs[0] == runs[1] and len(runs[0]) == 12


def test_image_encoded_once_per_conversation(model):
    calls = []

    def counting_encode(images):
        calls.append(images.shape)
        return model.encode_image(images)

    engine = ChatEngine(ModelView(model, encode_image=counting_encode))
    conv = engine.new_conversation(photo())
    for q in QUESTIONS:
        engine.ask(conv, q, DecodingConfig(**GREEDY))
    list(engine.ask_stream(conv, "More?", DecodingConfig(**GREEDY)))
    assert calls == [torch.Size([1, 3, 224, 224])]


def test_cache_reuse_gives_the_same_tokens_as_rerunning_the_history(engine, model):
    cached, rerun = engine.new_conversation(photo()), engine.new_conversation(photo())
    for turn, q in enumerate(QUESTIONS):
        previous_prompt = cached.last_turn.prompt_tokens if turn else 0
        engine.ask(cached, q, DecodingConfig(**GREEDY))
        rerun.cache, rerun.cached_tokens = None, []  # forget the cache: the whole history runs again
        engine.ask(rerun, q, DecodingConfig(**GREEDY))
        assert cached.last_turn.reply_ids == rerun.last_turn.reply_ids, f"turn {turn + 1}"
        assert rerun.last_turn.reused_tokens == 0
        if turn:  # turn N runs only what is new since the previous prompt, not the history
            assert cached.last_turn.reused_tokens >= previous_prompt
    # and an independent check of turn 3: the plain loop over the full re-rendered prompt
    prompt = engine.template.render(cached.history[:2], QUESTIONS[2])
    expected = reference_greedy(model, reference_embeds(model, cached.image_embeds, prompt), 12)
    assert cached.last_turn.reply_ids == expected


@pytest.mark.parametrize("template", ["llama2_chat", "instruction_response"])
def test_other_templates_cache_reuse_and_layout(tiny_assets, template):
    engine = ChatEngine(tiny_with_template(template))
    cached, rerun = engine.new_conversation(photo()), engine.new_conversation(photo())
    for q in QUESTIONS[:2]:
        engine.ask(cached, q, DecodingConfig(**GREEDY))
        rerun.cache, rerun.cached_tokens = None, []
        engine.ask(rerun, q, DecodingConfig(**GREEDY))
        assert cached.last_turn.reply_ids == rerun.last_turn.reply_ids
    assert cached.last_turn.reused_tokens > 0
    assert engine.prompt_text(cached, "Q?").startswith(engine.template.user_open + "<Img><ImageHere></Img> ")


def test_streaming_ends_with_the_non_streaming_text(engine):
    plain, streamed = engine.new_conversation(photo()), engine.new_conversation(photo())
    decoding = DecodingConfig(do_sample=False, max_new_tokens=20)
    for q in QUESTIONS[:2]:
        reply = engine.ask(plain, q, decoding)
        chunks = list(engine.ask_stream(streamed, q, decoding))
        assert len(chunks) > 1 and chunks[-1] == reply
        assert streamed.last_turn.reply_ids == plain.last_turn.reply_ids
    assert streamed.history == plain.history


def test_closing_the_stream_stops_generation_and_keeps_the_partial_reply(engine):
    conv = engine.new_conversation(photo())
    stream = engine.ask_stream(conv, QUESTIONS[0], DecodingConfig(do_sample=False, max_new_tokens=200))
    first = next(stream)
    stream.close()
    assert conv.last_turn.stopped_by == "cancelled" and conv.last_turn.new_tokens < 200
    assert conv.history[0][0] == QUESTIONS[0] and conv.history[0][1].startswith(first[:1])
    engine.ask(conv, QUESTIONS[1], DecodingConfig(**GREEDY))  # the conversation goes on
    assert len(conv.history) == 2


def test_sampling_with_a_seed_is_reproducible_and_leaves_the_global_rng_alone(engine):
    def sample(seed):
        conv = engine.new_conversation(photo())
        engine.ask(conv, QUESTIONS[0], DecodingConfig(do_sample=True, temperature=1.0, top_p=0.9, seed=seed,
                                                      max_new_tokens=16))
        return conv.last_turn.reply_ids

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = sample(7), sample(7), sample(8)
    assert a == b and a != c
    torch.testing.assert_close(torch.rand(3), expected_next)


def test_beam_search_with_cache_equals_without(engine, model):
    beams = DecodingConfig(do_sample=False, num_beams=3, max_new_tokens=10)
    cached, rerun = engine.new_conversation(photo()), engine.new_conversation(photo())
    for q in QUESTIONS[:2]:
        engine.ask(cached, q, beams)
        rerun.cache, rerun.cached_tokens = None, []
        engine.ask(rerun, q, beams)
        assert cached.last_turn.reply_ids == rerun.last_turn.reply_ids
    # beam search itself: transformers' generate over the same embeddings
    prompt = engine.template.render(cached.history[:1], QUESTIONS[1])
    embeds = reference_embeds(model, cached.image_embeds, prompt)
    out = model.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                  do_sample=False, num_beams=3, max_new_tokens=10, stop_strings=["###"],
                                  tokenizer=model.tokenizer, pad_token_id=model.tokenizer.pad_token_id)
    assert cached.last_turn.reply_ids == out[0].tolist()


def test_batched_generation_equals_unbatched_greedy(engine):
    images = [photo(), photo((90, 60, 40), (400, 300)), photo((230, 200, 190), (128, 128))]
    questions = ["What's wrong with my skin?", QUESTIONS[1], "Is it contagious?"]
    batched = [engine.new_conversation(img) for img in images]
    single = [engine.new_conversation(img) for img in images]
    for convs in (batched, single):  # different history lengths -> different left padding
        engine.ask(convs[0], QUESTIONS[0], DecodingConfig(**GREEDY))
        engine.ask(convs[1], QUESTIONS[0], DecodingConfig(do_sample=False, max_new_tokens=4))
    for turn in range(2):  # the second batched turn reuses the caches the first one left
        replies = engine.ask_batch(batched, questions, DecodingConfig(**GREEDY))
        for conv, q, reply in zip(single, questions, replies):
            assert engine.ask(conv, q, DecodingConfig(**GREEDY)) == reply
        assert [c.last_turn.reply_ids for c in batched] == [c.last_turn.reply_ids for c in single]
        assert [c.history for c in batched] == [c.history for c in single]
        assert [c.last_turn.reused_tokens for c in batched] == [c.last_turn.reused_tokens for c in single]
        assert all(c.last_turn.reused_tokens > 0 for c in batched[:2 if turn == 0 else 3])
        questions = questions[::-1]
    # beam search in a batch runs without the caches and gives transformers' beams row by row
    beams = DecodingConfig(do_sample=False, num_beams=2, max_new_tokens=6)
    replies = engine.ask_batch(batched, questions, beams)
    assert replies == [engine.ask(conv, q, beams) for conv, q in zip(single, questions)]


class ScriptedLlama(LlamaForCausalLM):
    """The tiny LLM forced to emit `script`, one token per forward pass (one pass per generated token)."""

    script: list = []

    def generate(self, *args, **kwargs):
        self.step = 0
        return super().generate(*args, **kwargs)

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        forced = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        out.logits[:, -1, :] = -1e4
        out.logits[:, -1, forced] = 0.0
        return out


@pytest.mark.parametrize("stop_pieces", [["▁###"], ["###"], ["##", "#"]])
def test_generation_stops_at_the_template_stop_string_however_it_is_tokenized(model, stop_pieces):
    # like Llama's "###" = [835] or [2277, 29937], the tiny tokenizer has '▁###', '###' and '##' + '#'
    tok = model.tokenizer
    stop_ids = tok.convert_tokens_to_ids(stop_pieces)
    assert tok.decode(stop_ids).strip() == "###" and tok.unk_token_id not in stop_ids
    llm = ScriptedLlama(model.llm.config).eval()
    llm.load_state_dict(model.llm.state_dict())
    answer = tok("It looks like a plaque", add_special_tokens=False).input_ids
    llm.script = answer + stop_ids + tok("Human: more", add_special_tokens=False).input_ids
    engine = ChatEngine(ModelView(model, llm=llm, embed_tokens=lambda ids: llm.get_input_embeddings()(ids)))
    conv = engine.new_conversation(photo())
    reply = engine.ask(conv, QUESTIONS[0], DecodingConfig(do_sample=False, max_new_tokens=40))
    assert reply == "It looks like a plaque"
    assert conv.last_turn.stopped_by == "stop_string"
    assert conv.last_turn.reply_ids == answer + stop_ids  # nothing generated after the stop string
    assert list(engine.ask_stream(conv, "More?", DecodingConfig(do_sample=False, max_new_tokens=40)))[-1] == \
        "It looks like a plaque"


def test_eos_ends_the_reply(tiny_assets):
    model = tiny_with_template("llama2_chat")
    tok = model.tokenizer
    llm = ScriptedLlama(model.llm.config).eval()
    llm.load_state_dict(model.llm.state_dict())
    llm.script = tok("Acne", add_special_tokens=False).input_ids + [tok.eos_token_id, 5, 6]
    engine = ChatEngine(ModelView(model, llm=llm))
    conv = engine.new_conversation(photo())
    assert engine.ask(conv, "Q?", DecodingConfig(do_sample=False, max_new_tokens=40)) == "Acne"
    assert conv.last_turn.stopped_by == "eos"
    assert engine.prompt_text(conv, "R?") == "[INST] <Img><ImageHere></Img> Q? [/INST] Acne </s><s>[INST] R? [/INST]"
    # '</s><s>' in the template become the EOS and BOS ids, not text
    engine.ask(conv, "R?", DecodingConfig(do_sample=False, max_new_tokens=3))
    assert conv.cached_tokens.count(tok.eos_token_id) >= 1 and conv.cached_tokens.count(tok.bos_token_id) == 2


def test_long_conversations_drop_the_oldest_turns_but_keep_the_image(engine):
    conv = engine.new_conversation(photo())
    decoding = DecodingConfig(do_sample=False, max_new_tokens=8, max_length=190)
    for turn in range(8):
        engine.ask(conv, f"Question number {turn} about the lesion?", decoding)
        report = conv.last_turn
        assert report.prompt_tokens + report.max_new_tokens <= 190
        if report.newly_dropped:
            break
    else:
        pytest.fail("the context never filled up")
    assert report.dropped_turns >= 1 and conv.first_kept == report.dropped_turns
    prompt = engine.prompt_text(conv, "Next?")
    assert "<Img><ImageHere></Img> " in prompt and "Question number 0 " not in prompt
    assert len(conv.history) == turn + 1  # the history shown to the user keeps every turn


def test_bad_questions_get_clear_messages(engine):
    conv = engine.new_conversation(photo())
    with pytest.raises(ChatInputError, match="^Please type a question about the image.$"):
        engine.ask(conv, "   ")
    with pytest.raises(ChatInputError, match=r"^The message is too long \(4001 characters; at most 4000\)"):
        engine.ask(conv, "a" * 4001)
    with pytest.raises(ChatInputError, match="^The message is too long: with the image it takes"):
        engine.ask(conv, "skin " * 300, DecodingConfig(max_length=200))
    with pytest.raises(ChatInputError, match="may not contain '<ImageHere>'"):
        engine.ask(conv, "look at <ImageHere>")
    with pytest.raises(ValueError, match="beam search .* needs do_sample false"):
        DecodingConfig(do_sample=True, num_beams=2)
    assert conv.history == [] and conv.last_turn is None  # nothing half-done was kept


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "CMYK"])
def test_any_image_mode_starts_a_conversation(engine, mode):
    img = photo().convert(mode) if mode != "I;16" else Image.new("I;16", (64, 64), 3000)
    conv = engine.new_conversation(img)
    assert conv.image_embeds.shape == (1, 32, engine.model.llm.config.hidden_size)


def test_bad_images_raise_image_errors(engine, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError) as err:
        engine.new_conversation(tmp_path / "notes.txt")
    assert err.value.reason == "not_an_image"
    buf = io.BytesIO()
    photo().save(buf, format="JPEG")
    with pytest.raises(ImageError) as err:
        engine.new_conversation(buf.getvalue()[:200])
    assert err.value.reason in ("truncated", "unreadable")
