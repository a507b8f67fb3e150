"""The tiny LLM's pretraining corpus: conversations about a synthetic skin photo in the project's clinical
language and in exactly the token layouts the model later sees (docs/model.md, "The tiny model").

Every `Dialogue` is laid out by `skingpt4.prompting.layout` -- the one place training and chat build their
tokens -- with the vicuna_v0 template (`dialogue_formats()`): style "train" is SkinGPT4.forward's layout (a
prompt line and its answer), style "chat" the chat engine's (system text, earlier turns, the question, the reply).
`cues` name what the image shows ("class:Dermatitis", "pattern:rings", "concept:Plaque"; a lesion's concepts are
drawn as the world draws them, so the LLM learns which concept combinations make which class); during pretraining the
32 image positions hold a noisy code of those cues (llm.py), so the LLM learns to read its image slot the way
a real LLM reads words, and the trained projection later has something to steer.

What is said comes from the project's own data definitions, so the corpus and the training captions cannot
drift apart: the class sentences, classes and folders of the class table (skingpt4/common/classes.json), the
doctors' note sentence and lesion patterns of the synthetic world (world.py), SKINCON's concept wording and caption
templates (skingpt4/common/concepts.json), the training and clinical prompts shipped in skingpt4/prompting/prompts/,
and the clinical answers in corpus.json.

Kinds of dialogue (shares in `KIND_SHARES`):
  step2      style train, a step-2 prompt -> a Dermnet class sentence or a doctors' note
  step1      style train, the step-1 prompt -> a SKINCON concept caption
  clinical   style chat, the four clinical prompts in one conversation, each answered
  diagnosis  style chat, one step-2 question -> a class sentence
  concepts   style chat, the concept question -> a concept caption
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from skingpt4.common.class_table import dermnet_mapping
from skingpt4.common.concept_table import CONCEPTS, VARIED_TEMPLATES, concept_caption
from skingpt4.prompting import IMAGE_PLACEHOLDER, IMAGE_SLOT, IMAGE_TAG, ChatTemplate, layout
from skingpt4.prompting.clinical import CLINICAL_PROMPTS, CONCEPT_PROMPT
from skingpt4.prompting.prompt_files import question_of, read_prompt_lines
from skingpt4.prompting.tokenize import tokenize_segment
from skingpt4.tiny import world

CLINICAL_TEXT = Path(__file__).with_name("corpus.json")
KIND_SHARES = {"step2": 0.25, "step1": 0.15, "clinical": 0.35, "diagnosis": 0.1, "concepts": 0.15}
# Share of lesion dialogues whose slot holds the class's own code beside its concepts' codes (lesion_cues).
CLASS_CUE_SHARE = 0.5
# Share of clinical dialogues whose image is withheld (noise in the slot; the first reply, which names the class,
# is given but not trained): prompts 2-4 then learn to follow the conversation, not only the image code.
BLIND_SHARE = 0.25
# Share of dialogues whose text before the image is swapped between the layouts (the chat template's system text
# added to a training dialogue, or left out of a chat dialogue): the LLM learns to read the image the same way
# whatever precedes it, so a projection trained in the training layout also works in the chat layout.
PREFIX_SWAP_SHARE = 0.3


def dialogue_formats() -> ChatTemplate:
    """The one place the corpus reads the prompt formats: the tiny variant's chat template, which carries the
    chat turns and the training layout (`train_prompt`, `end_sym`)."""
    from skingpt4.common.registry import chat_templates

    return chat_templates.get("vicuna_v0")


@dataclass(frozen=True)
class Dialogue:
    kind: str
    style: str                                   # "train" | "chat" (skingpt4.prompting.layout)
    question: str                                # train: the prompt line, image tag included; chat: the last question
    answer: str
    history: tuple[tuple[str, str], ...] = ()    # chat: the earlier (question, reply) turns
    cues: tuple[str, ...] = ()                   # what the image shows
    blind: bool = False                          # the slot holds noise; the first reply is given, not trained
    swapped: bool = False                        # the text before the image is the other layout's (see sample)


def _prompt_lines(path: str) -> list[str]:
    return [question_of(line) for line in read_prompt_lines(path)]


class Corpus:
    """Seeded random dialogues (`sample`), their token layout (`tokens`), every cue (`cues`) and text for the
    tokenizer (`tokenizer_lines`)."""

    def __init__(self, template: Optional[ChatTemplate] = None):
        self.template = template or dialogue_formats()
        mapping = dermnet_mapping()
        self.concepts, self.concept_templates, self.note = CONCEPTS, VARIED_TEMPLATES, world.NOTE_CAPTION
        self.phrases: dict[str, str] = mapping["classes"]
        self.captions = [mapping["caption"], *mapping.get("varied_captions", [])]
        self.patterns: dict[str, list[str]] = {}
        for label, pattern in world.folder_looks():
            if pattern not in self.patterns.setdefault(label, []):
                self.patterns[label].append(pattern)
        text = json.loads(CLINICAL_TEXT.read_text(encoding="utf-8"))
        missing = sorted(set(self.phrases) - set(text["classes"]))
        if missing:
            raise ValueError(f"{CLINICAL_TEXT}: no clinical text for the classes {missing}")
        self.clinical, self.features_intro, self.advice = text["classes"], text["features_intro"], text["advice"]
        self.step1_prompts, self.step2_prompts = _prompt_lines("prompts/step1.txt"), _prompt_lines("prompts/step2.txt")

    @cached_property
    def cues(self) -> list[str]:
        return ([f"class:{c}" for c in self.phrases] + [f"pattern:{p}" for p in world.PATTERNS]
                + [f"concept:{c}" for c in self.concepts])

    # ------------------------------------------------------------------------------------------ answers
    def class_sentence(self, label: str, rng: random.Random) -> str:
        return rng.choice(self.captions).format(phrase=self.phrases[label])

    def note_sentence(self, label: str, pattern: str) -> str:
        return self.note.format(phrase=self.phrases[label], pattern=pattern)

    def clinical_answers(self, label: str, pattern: str, rng: random.Random) -> list[str]:
        text = self.clinical[label]
        return [self.class_sentence(label, rng),
                f"{self.features_intro.format(pattern=pattern)} {text['features']}",
                text["cause"],
                f"{text['treatment']} {self.advice}"]

    def concept_sentence(self, concepts: list[str], rng: random.Random) -> str:
        return concept_caption(concepts, rng.choice(self.concept_templates))

    # ------------------------------------------------------------------------------------------ layouts
    def training(self, kind: str, question: str, answer: str, cues: tuple[str, ...]) -> Dialogue:
        """SkinGPT4.forward's sample: the prompt line (image tag + question) and the answer."""
        return Dialogue(kind, "train", f"{IMAGE_TAG} {question}", answer, cues=cues)

    def chat(self, kind: str, turns: list[tuple[str, str]], cues: tuple[str, ...], blind: bool = False) -> Dialogue:
        """The chat engine's prompt for the last turn (earlier turns in the history), then its reply."""
        (question, reply), history = turns[-1], tuple(turns[:-1])
        return Dialogue(kind, "chat", question, reply, history, cues, blind)

    def layout_template(self, dialogue: Dialogue) -> ChatTemplate:
        """The template a dialogue is laid out with: the corpus's own, or with the text before the image swapped
        (the system text added to a training sample, or left out of a chat one)."""
        if not dialogue.swapped:
            return self.template
        if dialogue.style == "train":
            return dataclasses.replace(self.template, train_prompt=self.template.system + self.template.train_prompt)
        return dataclasses.replace(self.template, system="")

    def tokens(self, dialogue: Dialogue, tokenizer, n_image: int) -> tuple[list[int], int]:
        """(token ids with IMAGE_SLOT at the image positions, index of the first trained position): every token
        after the image is trained -- questions and replies -- except, in a blind dialogue, those of the text up
        to the end of the first reply."""
        template = self.layout_template(dialogue)
        laid = layout(template, tokenizer, dialogue.history, dialogue.question, n_image=n_image,
                      answer=dialogue.answer, style=dialogue.style)
        start = laid.tokens.index(IMAGE_SLOT) + n_image
        if dialogue.blind:
            after = template.render(list(dialogue.history), dialogue.question).split(IMAGE_PLACEHOLDER)[1]
            first = dialogue.history[0][1] if dialogue.history else dialogue.answer
            head = after[:after.index(first) + len(first)]
            full, cut = tokenize_segment(tokenizer, after), tokenize_segment(tokenizer, head)
            start += next((i for i, (a, b) in enumerate(zip(full, cut)) if a != b), min(len(full), len(cut)))
        return laid.tokens, start

    def text(self, dialogue: Dialogue) -> str:
        """The dialogue as plain text (image placeholder left out)."""
        template = self.layout_template(dialogue)
        if dialogue.style == "train":
            prompt, answer = template.render_training(dialogue.question), dialogue.answer + template.end_sym
        else:
            prompt = template.render(list(dialogue.history), dialogue.question)
            answer = template.reply_open + dialogue.answer + template.end_sym
        return (prompt + answer).replace(IMAGE_TAG, " ").replace(IMAGE_PLACEHOLDER, " ")

    # ------------------------------------------------------------------------------------------ sampling
    def sample(self, rng: random.Random) -> Dialogue:
        dialogue = self._sample(rng)
        return dataclasses.replace(dialogue, swapped=True) if rng.random() < PREFIX_SWAP_SHARE else dialogue

    def _sample(self, rng: random.Random) -> Dialogue:
        kind = rng.choices(list(KIND_SHARES), weights=list(KIND_SHARES.values()))[0]
        if kind in ("step1", "concepts"):
            shown = sorted(rng.sample(list(self.concepts), rng.randint(1, 3)), key=list(self.concepts).index)
            cues = tuple(f"concept:{c}" for c in shown)
            answer = self.concept_sentence(shown, rng)
            if kind == "step1":
                return self.training(kind, rng.choice(self.step1_prompts), answer, cues)
            return self.chat(kind, [(CONCEPT_PROMPT, answer)], cues)
        label = rng.choice(list(self.phrases))
        pattern = rng.choice(self.patterns[label])
        cues = self.lesion_cues(label, pattern, rng)
        if kind == "step2":
            answer = self.note_sentence(label, pattern) if rng.random() < 0.4 else self.class_sentence(label, rng)
            return self.training(kind, rng.choice(self.step2_prompts), answer, cues)
        if kind == "diagnosis":
            return self.chat(kind, [(rng.choice(self.step2_prompts), self.class_sentence(label, rng))], cues)
        answers = self.clinical_answers(label, pattern, rng)
        return self.chat(kind, list(zip(CLINICAL_PROMPTS, answers)), cues, blind=rng.random() < BLIND_SHARE)

    def lesion_cues(self, label: str, pattern: str, rng: random.Random) -> tuple[str, ...]:
        """What the slot of a lesion image of `label` shows: its pattern and the concepts of one draw from the
        class's distribution (world.lesion_concepts), and the class itself only in a share CLASS_CUE_SHARE of the
        dialogues -- so the LLM learns to name a class from its concepts, as a clinician does."""
        shown = world.lesion_concepts(np.random.default_rng(rng.getrandbits(64)), label)
        names = list(self.concepts)
        cues = [f"pattern:{pattern}"] + [f"concept:{names[i]}" for i in shown]
        return tuple([f"class:{label}"] * (rng.random() < CLASS_CUE_SHARE) + cues)

    def stream(self, seed: int) -> Iterator[Dialogue]:
        rng = random.Random(seed)
        while True:
            yield self.sample(rng)

    def tokenizer_lines(self, n: int, seed: int) -> list[str]:
        """Distinct text of `n` sampled dialogues (image positions left out), for training the tokenizer."""
        return sorted({self.text(dialogue) for dialogue, _ in zip(self.stream(seed), range(n))})
