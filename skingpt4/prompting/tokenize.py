"""Tokenizing one text segment of a prompt (docs/prompts.md): no special tokens are added, and a literal
`<s>` / `</s>` in the text (Llama-2's turn separator in a template) stands for the tokenizer's BOS / EOS token."""
from __future__ import annotations


def tokenize_segment(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without added special tokens; `<s>` / `</s>` become BOS / EOS."""
    ids: list[int] = []
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    for i, part in enumerate(text.split(eos) if eos else [text]):
        if i:
            ids.append(tokenizer.eos_token_id)
        for j, piece in enumerate(part.split(bos) if bos else [part]):
            if j:
                ids.append(tokenizer.bos_token_id)
            if piece:
                ids += tokenizer(piece, add_special_tokens=False).input_ids
    return ids
