"""`tokenize_segment` gives the ids of the legacy sentencepiece Llama tokenizer that the released SkinGPT-4
projection was trained with. Reference: the `sentencepiece` library itself, encoding each piece between the
special tokens (what the slow tokenizer of transformers 4.28 did), independent of transformers."""
import io
import json
import re

import pytest

from skingpt4.models.llm import load_tokenizer
from skingpt4.prompting.tokenize import tokenize_segment

EDGE_CASES = [
    " Could you describe?", "Could you describe?", "  two  spaces ", " ###", "###", "###Assistant: ", "",
    " ", "   ", "\n", " \n ", "a\nb", "\t tab", "x     y", "trailing ", "é ü 😀 ñ", "12345 678", "ImageContent</Img>.",
    "<s>[INST] hi [/INST]", "<s> after bos", "before bos <s>", "a</s> b", "a</s>b", " A. </s><s>[INST] R? [/INST]",
    "</s></s>", "<s>  </s>", "<unk> y", "###Human: <Img>", "</Img> Could you describe the skin disease in this image "
    "for me?###Assistant:", " This lesion shows plaque and scale.###",
]
SPECIALS = ("<s>", "</s>", "<unk>")


def sentencepiece_reference(sp, text: str) -> list[int]:
    ids = []
    for part in re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text):
        if part in SPECIALS:
            ids.append(sp.piece_to_id(part))
        elif part:
            ids += sp.encode(part)
    return ids


@pytest.fixture(scope="module")
def tiny_pair(tiny_assets):
    import sentencepiece as spm

    directory = tiny_assets / "llm"
    return load_tokenizer(str(directory), pad_token="unk"), spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))


@pytest.fixture(scope="module")
def whitespace_pair(tmp_path_factory):
    """A second sentencepiece model with whitespace-only pieces ('▁▁', as Llama's vocabulary has)."""
    import sentencepiece as spm

    from skingpt4.tiny.assets import tiny_corpus

    directory = tmp_path_factory.mktemp("ws_tokenizer")
    lines = tiny_corpus().splitlines() + ["    indented  code    with   runs  of spaces", "a  b   c    d"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=400, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, num_threads=1, hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True, split_digits=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, minloglevel=2)
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    assert sp.piece_to_id("\u2581\u2581") != sp.unk_id()
    return load_tokenizer(str(directory), pad_token="unk"), sp


@pytest.mark.parametrize("pair", ["tiny_pair", "whitespace_pair"])
def test_every_edge_case_matches_sentencepiece(pair, request):
    tokenizer, sp = request.getfixturevalue(pair)
    wrong = {}
    for text in EDGE_CASES:
        ours, reference = tokenize_segment(tokenizer, text), sentencepiece_reference(sp, text)
        if ours != reference:
            wrong[text] = (tokenizer.convert_ids_to_tokens(ours), [sp.id_to_piece(i) for i in reference])
    assert wrong == {}


def test_leading_space_keeps_the_dummy_prefix(tiny_pair):
    tokenizer, sp = tiny_pair
    ids = tokenize_segment(tokenizer, " Could you describe?")
    assert tokenizer.convert_ids_to_tokens(ids)[:2] == ["\u2581", "\u2581Could"]
    # the fast tokenizer on its own drops that '▁': the reason this function exists
    assert tokenizer(" Could you describe?", add_special_tokens=False).input_ids != ids
    assert tokenize_segment(tokenizer, "a</s> b")[1:] == [tokenizer.eos_token_id] + sp.encode(" b")


def test_the_real_prompts_are_unchanged(tiny_pair):
    """Segments without a leading space were already right: the prompts of the release give the same ids."""
    from skingpt4.common.registry import chat_templates
    from skingpt4.prompting.clinical import CLINICAL_PROMPTS
    from skingpt4.prompting.templates import split_at_image

    tokenizer, _ = tiny_pair
    for name in ("vicuna_v0", "llama2_chat", "instruction_response"):
        template = chat_templates.get(name)
        for segment in split_at_image(template.render([(CLINICAL_PROMPTS[0], "It is acne.")],
                                                               CLINICAL_PROMPTS[1])):
            for piece in re.split("(</s>|<s>)", segment):
                if piece and piece not in SPECIALS and not piece.startswith(" "):
                    assert tokenize_segment(tokenizer, piece) == tokenizer(piece, add_special_tokens=False).input_ids
