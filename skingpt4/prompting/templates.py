"""Chat templates: the one description of how a conversation about one image is written as text for the LLM,
used alike by training, chat and evaluation (docs/prompts.md). A model variant names its template
(`template:` in skingpt4/models/variants/<variant>.yaml); `skingpt4.prompting.layout` turns a rendering into
token ids.

Chat: a template renders the whole conversation -- earlier (question, reply) turns plus the new question -- as
one string that contains the image placeholder `<ImageHere>` exactly once, inside the first question. The
rendering of `vicuna_v0` is the original SkinGPT-4 / MiniGPT-4 demo prompt, byte for byte:

    <system>###Human: <Img><ImageHere></Img> <question>###Assistant: <reply>###Human: <question 2>###Assistant:

Training: one sample is one prompt line (from prompts/*.txt, carrying `<Img><ImageHere></Img>`) and its answer,
written `train_prompt.format(line) + answer + end_sym`, as the original trains (no system text):

    ###Human: <Img><ImageHere></Img> Could you describe ...? ###Assistant: <answer>###

`<s>` / `</s>` in a rendering (Llama-2's turn separator) stand for the tokenizer's BOS / EOS tokens; other special
tokens written in a template (Llama-3's `<|eot_id|>`) are read as special tokens by the tokenizer.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Optional, Sequence

from skingpt4.common.registry import chat_templates

IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_TAG = "<Img><ImageHere></Img>"
VICUNA_SYSTEM = (
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it "
    "to you. Please answer my questions."
)


@dataclass(frozen=True)
class ChatTemplate:
    """The text around each question and reply.

    system:         text before the first question ("" for none); chat only, as the original trains without it.
    user_open:      text before every question.
    assistant_open: text after every question; the prompt ends here and the model writes the reply.
    reply_open:     text between `assistant_open` and a finished reply kept in the history.
    reply_close:    text after every finished reply, before the next `user_open`.
    stop_strings:   generation stops once the reply contains one of these; the reply is cut there.
                    (Generation also always stops at the tokenizer's EOS token.)
    train_prompt:   a training sample's prompt; `{}` is the prompt line (the original's `prompt_template`).
    end_sym:        appended to every training answer (the original's `end_sym`).
    """

    name: str
    system: str
    user_open: str
    assistant_open: str
    reply_close: str
    stop_strings: tuple[str, ...]
    train_prompt: str
    end_sym: str
    reply_open: str = " "

    def render(self, history: Sequence[tuple[str, str]], question: str) -> str:
        """The prompt for `question` after the finished `history` turns; the image goes with the first question."""
        questions = [q for q, _ in history] + [question]
        questions[0] = f"{IMAGE_TAG} {questions[0]}"
        text = self.system
        for (_, reply), asked in zip(history, questions):
            text += f"{self.user_open}{asked}{self.assistant_open}{self.reply_open}{reply}{self.reply_close}"
        return text + f"{self.user_open}{questions[-1]}{self.assistant_open}"

    def render_training(self, prompt_line: Optional[str]) -> str:
        """A training sample's prompt. Without a prompt line the image alone precedes the answer (MiniGPT-4's
        first-stage layout)."""
        return IMAGE_PLACEHOLDER if prompt_line is None else self.train_prompt.format(prompt_line)

    def clean_reply(self, text: str) -> str:
        """The reply as shown to the user and kept in the history: cut at the first stop string, control
        characters removed (a browser draws them as empty boxes; newlines and tabs stay), trimmed."""
        for stop in self.stop_strings:
            text = text.split(stop, 1)[0]
        # a reply cut at max_new_tokens can end inside a character, which decodes as U+FFFD: drop that tail
        return strip_control_characters(text).rstrip("\ufffd").strip()


def strip_control_characters(text: str) -> str:
    """Drop C0/C1 control characters (a random or byte-fallback token can decode to one); keep newline and tab,
    turn carriage returns into newlines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def split_at_image(prompt: str) -> tuple[str, str]:
    """(text before the image embeddings, text after them)."""
    if prompt.count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(
            f"a prompt must contain '{IMAGE_PLACEHOLDER}' exactly once, found {prompt.count(IMAGE_PLACEHOLDER)} "
            "(is there an image tag inside a question?)"
        )
    before, after = prompt.split(IMAGE_PLACEHOLDER)
    return before, after


# Vicuna v0: the format of the released SkinGPT-4 weights (Vicuna and Llama-2-13b-chat alike).
VICUNA_V0 = chat_templates.register("vicuna_v0")(
    ChatTemplate(
        name="vicuna_v0",
        system=VICUNA_SYSTEM,
        user_open="###Human: ",
        assistant_open="###Assistant:",
        reply_close="",  # the next user_open starts with the '###' separator
        stop_strings=("###",),
        train_prompt="###Human: {} ###Assistant: ",
        end_sym="###",
    )
)

# Llama-2 chat turns ("[INST] {} [/INST] ", end_sym "</s>"), as MiniGPT-4's Llama-2 configs train them.
LLAMA2_CHAT = chat_templates.register("llama2_chat")(
    ChatTemplate(
        name="llama2_chat",
        system="",
        user_open="[INST] ",
        assistant_open=" [/INST]",
        reply_close=" </s><s>",
        stop_strings=(),  # the reply ends with the EOS token
        train_prompt="[INST] {} [/INST] ",
        end_sym="</s>",
    )
)

# The paper's instruction format ("### Instruction: {} ### Response: ").
INSTRUCTION_RESPONSE = chat_templates.register("instruction_response")(
    ChatTemplate(
        name="instruction_response",
        system="",
        user_open="### Instruction: ",
        assistant_open=" ### Response:",
        reply_close=" ",
        stop_strings=("###",),
        train_prompt="### Instruction: {} ### Response: ",
        end_sym="###",
    )
)

# Llama-3 chat turns: header tokens around each role, every turn ends with <|eot_id|> (the tokenizer's EOS).
LLAMA3_CHAT = chat_templates.register("llama3_chat")(
    ChatTemplate(
        name="llama3_chat",
        system="",
        user_open="<|start_header_id|>user<|end_header_id|>\n\n",
        assistant_open="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        reply_open="",
        reply_close="<|eot_id|>",
        stop_strings=(),  # the reply ends with <|eot_id|>, the EOS token
        train_prompt="<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n",
        end_sym="<|eot_id|>",
    )
)
