"""Tokenizing one text segment of a prompt, an answer or a question: the one place text becomes token ids.

The released SkinGPT-4 / MiniGPT-4 projections were trained with the slow, *legacy* sentencepiece Llama
tokenizer (transformers 4.28, `use_fast=False`), and this function reproduces what it did, for every text:

1. the text is cut at the special tokens (`<s>`, `</s>`, `<unk>`): each stands for its id (Llama-2's turn
   separator in a template is a literal `<s>` / `</s>`), and no whitespace around one is dropped;
2. every piece between them is encoded by sentencepiece on its own, which always puts a dummy-prefix `▁` in
   front and turns every space into `▁` (Llama's normalizer neither strips nor collapses spaces), then
   applies the BPE merges, with byte fallback for characters outside the vocabulary.

The fast tokenizer transformers 5 builds for Llama differs in step 2: its Metaspace pre-tokenizer adds the
`▁` only when the piece does not already start with a space, so `" Could"` gave `[▁Could]` where the
original got `[▁, ▁Could]` (likewise `"  two  spaces "`, `" ###"` and text right after `<s>` / `</s>`).
Here the normalisation of step 2 is done by hand and only the tokenizer's BPE model is applied, so the fast
and the slow tokenizer give the same ids (tests/test_prompting_tokenize.py checks them against the
sentencepiece library itself). Tokenizers that are not sentencepiece-style are used as they are.
No BOS/EOS is added: the caller places them.
"""
from __future__ import annotations

import re

SPIECE_UNDERLINE = "\u2581"  # sentencepiece's visible space, '▁'


def tokenize_segment(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as the legacy sentencepiece Llama tokenizer gives them, without added BOS/EOS;
    a literal special token (`<s>`, `</s>`, `<unk>`) in `text` becomes its id."""
    specials = _special_tokens(tokenizer)
    if not specials:
        return _encode_piece(tokenizer, text)
    ids: list[int] = []
    pattern = "(" + "|".join(re.escape(tok) for tok in sorted(specials, key=len, reverse=True)) + ")"
    for part in re.split(pattern, text):
        if part in specials:
            ids.append(specials[part])
        elif part:
            ids += _encode_piece(tokenizer, part)
    return ids


def _special_tokens(tokenizer) -> dict[str, int]:
    """{text: id} of the BOS, EOS and UNK tokens (the legacy tokenizer never split these)."""
    found = {}
    for name in ("bos", "eos", "unk"):
        token, token_id = getattr(tokenizer, f"{name}_token", None), getattr(tokenizer, f"{name}_token_id", None)
        if token and token_id is not None:
            found[str(token)] = int(token_id)
    return found


def _encode_piece(tokenizer, text: str) -> list[int]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and _is_sentencepiece_style(backend):
        normalized = SPIECE_UNDERLINE + text.replace(" ", SPIECE_UNDERLINE)  # dummy prefix, always
        return [token.id for token in backend.model.tokenize(normalized)]
    sp_model = getattr(tokenizer, "sp_model", None)
    if sp_model is not None:  # a slow sentencepiece tokenizer: the legacy path itself
        return list(sp_model.encode(text))
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _is_sentencepiece_style(backend) -> bool:
    """A `tokenizers` pipeline converted from a sentencepiece model: '▁' for spaces (Metaspace pre-tokenizer,
    or a Prepend/Replace('▁') normalizer) over a BPE or Unigram model."""
    if type(backend.model).__name__ not in ("BPE", "Unigram"):
        return False
    pre, norm = backend.pre_tokenizer, backend.normalizer
    return (pre is not None and SPIECE_UNDERLINE in str(pre) and "Metaspace" in str(pre)) or (
        norm is not None and SPIECE_UNDERLINE in str(norm))
