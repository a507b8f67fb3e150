"""The tiny LLM's pretraining corpus: conversations about a synthetic skin photo in the project's clinical
language and in exactly the token layouts the model later sees (docs/model.md, "The tiny model").

Each `Dialogue` is [BOS | `before` | 32 image positions | `after` segments], the segments tokenized one by one
without special tokens, as SkinGPT4.build_inputs (training) and ChatEngine (chat) lay them out. `cues` name
what the image shows ("class:Dermatitis", "pattern:rings", "concept:Plaque"); during pretraining the 32 image
positions hold a noisy code of those cues (tiny_llm.py), so the LLM learns to read its image slot the way
a real LLM reads words, and the trained projection later has something to steer.

What is said comes from the project's own data definitions, so the corpus and the training captions cannot
drift apart: the class sentences, classes and folders of data_prep/dermnet_mapping.json, the doctors' note
sentence and lesion patterns of the synthetic world, SKINCON's concept wording and caption templates, the
training prompts in prompts/, the four clinical prompts, and the clinical answers in tiny_corpus.json.

Kinds of dialogue (shares in `KIND_SHARES`):
  step2      training format, a step-2 prompt -> a Dermnet class sentence or a doctors' note
  step1      training format, the step-1 prompt -> a SKINCON concept caption
  clinical   chat format, the four clinical prompts in one conversation, each answered
  diagnosis  chat format, one step-2 question -> a class sentence
  concepts   chat format, the concept question -> a concept caption
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Optional

from skingpt4.models import tiny_world as world
from skingpt4.prompting import IMAGE_PLACEHOLDER, IMAGE_TAG, ChatTemplate
from skingpt4.prompting.clinical import CLINICAL_PROMPTS, CONCEPT_PROMPT

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLINICAL_TEXT = Path(__file__).with_name("tiny_corpus.json")
KIND_SHARES = {"step2": 0.25, "step1": 0.15, "clinical": 0.35, "diagnosis": 0.1, "concepts": 0.15}
# Share of clinical dialogues whose image is withheld (noise in the slot; the first reply, which names the class,
# is given but not trained): prompts 2-4 then learn to follow the conversation, not only the image code.
BLIND_SHARE = 0.25
# Share of dialogues whose text before the image is swapped between the layouts (the chat template's system text
# added to a training dialogue, or left out of a chat dialogue): the LLM learns to read the image the same way
# whatever precedes it, so a projection trained in the training layout also works in the chat layout.
PREFIX_SWAP_SHARE = 0.3


@dataclass(frozen=True)
class DialogueFormats:
    train_template: str    # training prompt, '{}' = the prompt line with the image tag
    end_sym: str           # appended to every training answer
    chat: ChatTemplate     # chat rendering (system text, turn markers, stop strings)


def dialogue_formats() -> DialogueFormats:
    """The one place the corpus reads the prompt formats: the model's training layout and the chat template."""
    from skingpt4.common.registry import chat_templates
    from skingpt4.models.skin_gpt4 import SkinGPT4Config

    return DialogueFormats(SkinGPT4Config.prompt_template, SkinGPT4Config.end_sym, chat_templates.get("vicuna_v0"))


@dataclass(frozen=True)
class Dialogue:
    kind: str
    before: str                 # text before the image positions
    after: tuple[str, ...]      # text after them, in segments tokenized one by one (the trained tokens)
    cues: tuple[str, ...]       # what the image shows
    blind: bool = False         # the slot holds noise, not the cues' code
    unscored_chars: int = 0     # the first characters of the last `after` segment carry no loss


def _project_data():
    """The data definitions of data_prep/ (a source checkout's, not installed with the package)."""
    try:
        from data_prep import make_synthetic
        from data_prep.prepare_dermnet import load_mapping
        from data_prep.skincon_concepts import CONCEPTS, VARIED_TEMPLATES, concept_caption
    except ImportError as err:
        raise RuntimeError(f"the tiny LLM corpus reads data_prep/ of the source checkout; run from the repository "
                           f"root ({PROJECT_ROOT}): {err}") from None
    return load_mapping(), CONCEPTS, VARIED_TEMPLATES, concept_caption, make_synthetic.NOTE_CAPTION


def _prompt_lines(name: str) -> list[str]:
    lines = (PROJECT_ROOT / "prompts" / name).read_text(encoding="utf-8").splitlines()
    return [line.strip().replace(IMAGE_TAG, "").strip() for line in lines if IMAGE_PLACEHOLDER in line]


class Corpus:
    """Seeded random dialogues (`sample`), every cue (`cues`) and text for the tokenizer (`tokenizer_lines`)."""

    def __init__(self, formats: Optional[DialogueFormats] = None):
        self.formats = formats or dialogue_formats()
        mapping, self.concepts, self.concept_templates, self._concept_caption, self.note = _project_data()
        self.phrases: dict[str, str] = mapping["classes"]
        self.captions = [mapping["caption"], *mapping.get("varied_captions", [])]
        folders = sorted(mapping["folders"])
        self.patterns: dict[str, list[str]] = {}
        for index, folder in enumerate(folders):
            label = mapping["folders"][folder]
            if label is not None:
                self.patterns.setdefault(label, [])
                pattern = world.PATTERNS[index % len(world.PATTERNS)]
                if pattern not in self.patterns[label]:
                    self.patterns[label].append(pattern)
        text = json.loads(CLINICAL_TEXT.read_text(encoding="utf-8"))
        missing = sorted(set(self.phrases) - set(text["classes"]))
        if missing:
            raise ValueError(f"{CLINICAL_TEXT}: no clinical text for the classes {missing}")
        self.clinical, self.features_intro, self.advice = text["classes"], text["features_intro"], text["advice"]
        self.step1_prompts, self.step2_prompts = _prompt_lines("step1.txt"), _prompt_lines("step2.txt")

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
        return self._concept_caption(concepts, rng.choice(self.concept_templates))

    # ------------------------------------------------------------------------------------------ layouts
    def training(self, kind: str, question: str, answer: str, cues: tuple[str, ...]) -> Dialogue:
        """SkinGPT4.forward's layout: template(image tag + question), then answer + end_sym as its own segment."""
        before, after = self.formats.train_template.format(f"{IMAGE_TAG} {question}").split(IMAGE_PLACEHOLDER)
        return Dialogue(kind, before, (after, answer + self.formats.end_sym), cues)

    def chat(self, kind: str, turns: list[tuple[str, str]], cues: tuple[str, ...], blind: bool = False) -> Dialogue:
        """ChatEngine's layout of the last turn's prompt (the history rendered before it), then its reply.
        `blind`: the image is withheld and the text up to the end of the first reply is not trained."""
        template = self.formats.chat
        (question, reply), history = turns[-1], turns[:-1]
        before, after = template.split_at_image(template.render(history, question))
        close = template.stop_strings[0] if template.stop_strings else "</s>"
        text = f"{after} {reply}{close}"
        unscored = text.index(turns[0][1]) + len(turns[0][1]) if blind else 0
        return Dialogue(kind, before, (text,), cues, blind, unscored)

    # ------------------------------------------------------------------------------------------ sampling
    def sample(self, rng: random.Random) -> Dialogue:
        dialogue = self._sample(rng)
        if rng.random() < PREFIX_SWAP_SHARE:
            system = self.formats.chat.system
            before = dialogue.before[len(system):] if dialogue.before.startswith(system) else system + dialogue.before
            dialogue = dataclasses.replace(dialogue, before=before)
        return dialogue

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
        cues = (f"class:{label}", f"pattern:{pattern}")
        if kind == "step2":
            answer = self.note_sentence(label, pattern) if rng.random() < 0.4 else self.class_sentence(label, rng)
            return self.training(kind, rng.choice(self.step2_prompts), answer, cues)
        if kind == "diagnosis":
            return self.chat(kind, [(rng.choice(self.step2_prompts), self.class_sentence(label, rng))], cues)
        answers = self.clinical_answers(label, pattern, rng)
        return self.chat(kind, list(zip(CLINICAL_PROMPTS, answers)), cues, blind=rng.random() < BLIND_SHARE)

    def stream(self, seed: int) -> Iterator[Dialogue]:
        rng = random.Random(seed)
        while True:
            yield self.sample(rng)

    def tokenizer_lines(self, n: int, seed: int) -> list[str]:
        """Distinct text of `n` sampled dialogues (image positions left out), for training the tokenizer."""
        lines = []
        for dialogue, _ in zip(self.stream(seed), range(n)):
            lines.append(dialogue.before + " " + " ".join(dialogue.after))
        return sorted(set(lines))
