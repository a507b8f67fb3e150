"""Prompts for the exported transformers BLIP-2 model and for serving it (docs/scaling.md, "Export").

* `blip2_input_ids`: our token layout ([BOS | before | 32 image slots | after]) with the image slots written as
  the `<image>` token id, so `Blip2ForConditionalGeneration` scatters the 32 projected queries exactly where
  SkinGPT-4 puts `<ImageHere>`. This is exact: same ids as our model reads.
* `blip2_prompt_text`: the same as one string with 32 `<image>` tokens in place of `<ImageHere>`, for tools that
  take text. Tokenizing it whole can differ from our per-segment tokenization at the two segment borders
  (sentencepiece's dummy prefix): use the ids where exactness matters.
* `chat_template_jinja`: the model's chat format as a Jinja chat template (what vLLM's OpenAI chat API renders).
  vLLM's BLIP-2 input processor inserts the 32 image tokens at the very start of the prompt, before BOS, and
  nothing can place them mid-prompt there; the served prompt therefore is
  [32 image tokens | BOS | the rendering with `<Img></Img>` where `<Img><ImageHere></Img>` was].
  `served_prompt_text` is that text (BOS written as the tokenizer's BOS token).
"""
from __future__ import annotations

import json
from typing import Sequence

from skingpt4.prompting import IMAGE_PLACEHOLDER, IMAGE_SLOT
from skingpt4.prompting.templates import IMAGE_TAG, ChatTemplate

IMAGE_TOKEN = "<image>"           # the token transformers' and vLLM's BLIP-2 processors use
SERVED_IMAGE_TAG = "<Img></Img>"  # what is left of `<Img><ImageHere></Img>` in the served text


def blip2_input_ids(tokens: Sequence[int], image_token_id: int) -> list[int]:
    """A layout's token list (`SkinGPT4.layout(...).tokens`) with IMAGE_SLOT -> the `<image>` token id."""
    return [image_token_id if t == IMAGE_SLOT else t for t in tokens]


def blip2_prompt_text(template: ChatTemplate, history: Sequence[tuple[str, str]], question: str,
                      num_query_tokens: int) -> str:
    """The chat prompt as text with `num_query_tokens` `<image>` tokens where `<ImageHere>` is (no BOS)."""
    return template.render(history, question).replace(IMAGE_PLACEHOLDER, IMAGE_TOKEN * num_query_tokens)


def served_prompt_text(template: ChatTemplate, history: Sequence[tuple[str, str]], question: str,
                       bos_token: str) -> str:
    """The text the exported chat template renders for these turns (vLLM then puts the image tokens first)."""
    return bos_token + template.render(history, question).replace(IMAGE_TAG, SERVED_IMAGE_TAG)


def chat_template_jinja(template: ChatTemplate) -> str:
    """A Jinja chat template that renders OpenAI-style messages (optional system, then alternating user and
    assistant) as `served_prompt_text` does; a system message replaces the template's own system text."""
    q = json.dumps  # a JSON string literal is a valid Jinja string literal
    return (
        "{{- bos_token -}}"
        "{%- if messages and messages[0]['role'] == 'system' -%}{{- messages[0]['content'] -}}"
        f"{{%- else -%}}{{{{- {q(template.system)} -}}}}{{%- endif -%}}"
        "{%- for message in messages if message['role'] != 'system' -%}"
        "{%- if message['role'] == 'user' -%}"
        f"{{{{- {q(template.user_open)} -}}}}{{%- if loop.first -%}}{{{{- {q(SERVED_IMAGE_TAG + ' ')} -}}}}{{%- endif -%}}"
        f"{{{{- message['content'] -}}}}{{{{- {q(template.assistant_open)} -}}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{{{- {q(template.reply_open)} -}}}}{{{{- message['content'] -}}}}{{{{- {q(template.reply_close)} -}}}}"
        "{%- endif -%}{%- endfor -%}"
    )
