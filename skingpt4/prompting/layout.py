"""The token layout the LLM reads (docs/prompts.md), built in one place for training and for chat:

    [BOS | tokens before <ImageHere> | 32 image slots | tokens after | answer + end_sym]

Each text segment is tokenized alone without added special tokens (`tokenize_segment`), as the original does.
Image positions are marked `IMAGE_SLOT` in the token list; the model puts the projected image queries there.
Labels are the answer's token ids and `IGNORE_INDEX` on BOS, prompt and image positions (loss on the answer only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from skingpt4.prompting.templates import ChatTemplate, split_at_image
from skingpt4.prompting.tokenize import tokenize_segment

IMAGE_SLOT = -1      # stands for an image embedding in a token list; never a real token id
IGNORE_INDEX = -100  # label of the positions without loss
STYLES = ("train", "chat")


@dataclass(frozen=True)
class Layout:
    tokens: list[int]   # token ids, IMAGE_SLOT at the image positions, answer included
    labels: list[int]   # same length: the answer's ids, IGNORE_INDEX elsewhere
    prompt_length: int  # positions before the answer

    @property
    def image_positions(self) -> list[int]:
        return [i for i, t in enumerate(self.tokens) if t == IMAGE_SLOT]


def layout(template: ChatTemplate, tokenizer, history: Sequence[tuple[str, str]], question: Optional[str], *,
           n_image: int, answer: Optional[str] = None, style: str = "chat",
           max_answer_tokens: Optional[int] = None) -> Layout:
    """Token ids, image positions and labels of one conversation.

    style "chat":  the template's conversation rendering (system text, `history` turns, `question`), the prompt
                   the chat engine generates from; an `answer` is written as a reply would be.
    style "train": one training sample as the original trains it: `train_prompt` around the prompt line
                   `question` (which carries `<Img><ImageHere></Img>`; None: the image alone), no history.
    The answer (+ `end_sym`) is cut to `max_answer_tokens` tokens (the original's `max_txt_len`)."""
    if style == "chat":
        if question is None:
            raise ValueError("a chat prompt needs a question")
        text = template.render(history, question)
        answer_text = None if answer is None else f"{template.reply_open}{answer}{template.end_sym}"
    elif style == "train":
        if history:
            raise ValueError("a training sample has no history (style 'train' is one prompt line and its answer)")
        text = template.render_training(question)
        answer_text = None if answer is None else answer + template.end_sym
    else:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    before, after = split_at_image(text)
    prompt = ([tokenizer.bos_token_id] + tokenize_segment(tokenizer, before) + [IMAGE_SLOT] * n_image
              + tokenize_segment(tokenizer, after))
    answer_ids = [] if answer_text is None else tokenize_segment(tokenizer, answer_text)[:max_answer_tokens]
    return Layout(tokens=prompt + answer_ids, labels=[IGNORE_INDEX] * len(prompt) + answer_ids,
                  prompt_length=len(prompt))
