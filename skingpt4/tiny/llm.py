"""Pretraining the tiny Llama on the tiny corpus (corpus.py), so that it speaks the project's clinical
language and reads its image slot.

A real LLM arrives knowing words; the projection of SkinGPT-4 learns to put into the image positions something
the LLM can read. The tiny LLM learns both here. Every cue a synthetic image can show (a class, a lesion
pattern, a SKINCON concept) has a fixed random code vector (`SlotCodes`, seeded, RMS 1, never saved); in each
pretraining dialogue the 32 image positions hold a noisy, randomly weighted and scaled mixture of the codes of
the cues the image shows, and the LLM learns to answer accordingly. Later the projection -- the only trained
part of SkinGPT-4 -- must learn, from images alone, to write such codes into the slot; an untrained projection
writes noise, and the LLM then says the sentences of whichever class that noise resembles.

The loss is the language-model loss on every token after the image positions (questions and answers in both
layouts); the text before the image is the same in every dialogue of a layout.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from skingpt4.tiny.corpus import Corpus, Dialogue
from skingpt4.prompting import layout

IGNORE = -100


@dataclass
class LLMRecipe:
    steps: int = 250
    batch_size: int = 24
    lr: float = 6e-3
    warmup_steps: int = 30
    micro_tokens: int = 3000   # a batch is sorted by length and run in micro-batches of about this many tokens
    min_gain: float = 0.3      # the slot's code is scaled by a random gain in [min_gain, max_gain] (log-uniform)
    max_gain: float = 3.0
    max_noise: float = 0.6     # plus Gaussian noise of a random std in [0, max_noise] x gain
    max_distractors: int = 4   # plus up to this many codes of cues the image does not show, each weighted
    distractor_weight: float = 0.5  # at most this fraction of a shown cue's weight (a trained projection's slot
                                    # is never a clean code: the LLM must read the strongest cues)


class SlotCodes:
    """A fixed random code vector (RMS 1) per cue, and noisy slots made of them."""

    def __init__(self, cues: Sequence[str], hidden: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.index = {cue: i for i, cue in enumerate(cues)}
        self.codes = torch.randn(len(cues), hidden, generator=generator)

    def clean(self, cues: Sequence[str], positions: int) -> torch.Tensor:
        """[positions, hidden]: the plain mean of the cues' codes at every position."""
        return self.codes[[self.index[c] for c in cues]].mean(0).expand(positions, -1).clone()

    def noisy(self, cues: Sequence[str], positions: int, recipe: LLMRecipe, generator: torch.Generator) -> torch.Tensor:
        shown = [self.index[c] for c in cues]
        weights = torch.rand(positions, len(shown), generator=generator) * 0.4 + 0.6
        mix = (weights / weights.sum(1, keepdim=True)) @ self.codes[shown]        # [positions, hidden]
        others = [i for i in torch.randperm(len(self.codes), generator=generator).tolist() if i not in shown]
        n_other = int(torch.randint(0, recipe.max_distractors + 1, (1,), generator=generator))
        if n_other:
            strength = torch.rand(n_other, generator=generator) * recipe.distractor_weight / len(shown)
            mix = mix + strength @ self.codes[others[:n_other]]                   # the same at every position
        span = math.log(recipe.max_gain / recipe.min_gain)
        gain = recipe.min_gain * math.exp(span * torch.rand(1, generator=generator).item())
        noise = recipe.max_noise * torch.rand(1, generator=generator).item()
        return gain * (mix + noise * torch.randn(mix.shape, generator=generator))

    def blind(self, positions: int, recipe: LLMRecipe, generator: torch.Generator) -> torch.Tensor:
        """A slot that shows nothing: noise of a random gain."""
        span = math.log(recipe.max_gain / recipe.min_gain)
        gain = recipe.min_gain * math.exp(span * torch.rand(1, generator=generator).item())
        return gain * torch.randn(positions, self.codes.shape[1], generator=generator)


class Tokenized:
    """Token layouts of dialogues (Corpus.tokens), memoised: the corpus repeats its sentences."""

    def __init__(self, corpus: Corpus, tokenizer, n_slot: int):
        self.corpus, self.tokenizer, self.n_slot = corpus, tokenizer, n_slot
        self._rows: dict[Dialogue, tuple[list[int], int]] = {}

    def __call__(self, dialogue: Dialogue) -> tuple[list[int], int]:
        """(token ids, IMAGE_SLOT at the image positions; index of the first trained position)."""
        if dialogue not in self._rows:
            self._rows[dialogue] = self.corpus.tokens(dialogue, self.tokenizer, self.n_slot)
        return self._rows[dialogue]

    def trained(self, dialogue: Dialogue) -> int:
        """How many positions carry a loss (each predicts its token from the position before it)."""
        ids, start = self(dialogue)
        return len(ids) - start


def batch_inputs(model, tokens: Tokenized, dialogues: Sequence[Dialogue], slots: Sequence[torch.Tensor]) -> dict:
    """inputs_embeds / attention_mask / labels of dialogues laid out with their slots, right-padded: the image
    positions are filled by `SkinGPT4.embed`, as in training and chat."""
    rows = [tokens(d) for d in dialogues]
    embeds, mask = model.embed([ids for ids, _ in rows], torch.stack(list(slots)))
    labels = torch.full(mask.shape, IGNORE, dtype=torch.long)
    for r, (ids, start) in enumerate(rows):
        labels[r, start:len(ids)] = torch.tensor(ids[start:])
    return {"inputs_embeds": embeds, "attention_mask": mask, "labels": labels}


def pretrain_llm(model, corpus: Corpus, codes: SlotCodes, recipe: LLMRecipe, seed: int,
                 progress: Optional[Callable[[int, float], None]] = None) -> None:
    """Train the LLM of `model` (a SkinGPT4 of random weights, tiny_assets' build) in place on seeded corpus
    batches; leaves it in eval mode."""
    llm, n_slot = model.llm, model.cfg.qformer.num_query_tokens
    llm.requires_grad_(True)  # the tiny LLM is pretrained here, then frozen like any LLM
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    stream = corpus.stream(seed)
    tokens = Tokenized(corpus, model.tokenizer, n_slot)
    optimizer = torch.optim.AdamW(llm.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return recipe.lr * (step + 1) / recipe.warmup_steps
        done = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))

    llm.train()
    for step in range(recipe.steps):
        dialogues = [next(stream) for _ in range(recipe.batch_size)]
        slots = [codes.blind(n_slot, recipe, generator) if d.blind else codes.noisy(d.cues, n_slot, recipe, generator)
                 for d in dialogues]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        chunks = _micro_batches([len(tokens(d)[0]) for d in dialogues], recipe.micro_tokens)
        counts = [sum(tokens.trained(dialogues[i]) for i in chunk) for chunk in chunks]
        loss = 0.0
        for chunk, count in zip(chunks, counts):  # token-weighted mean over the whole batch
            part = llm(**batch_inputs(model, tokens, [dialogues[i] for i in chunk], [slots[i] for i in chunk])).loss
            (part * count / sum(counts)).backward()
            loss += part.item() * count / sum(counts)
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        optimizer.step()
        if progress is not None:
            progress(step + 1, loss)
    llm.eval()
    llm.requires_grad_(False)


def _micro_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped by similar length, each group's padded size (count x longest) within `budget`."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = [[]]
    for i in order:
        if groups[-1] and (len(groups[-1]) + 1) * lengths[i] > budget:
            groups.append([])
        groups[-1].append(i)
    return groups


@torch.no_grad()
def greedy_reply(model, corpus: Corpus, slot: torch.Tensor, question: str, max_new_tokens: int = 48,
                 history: Sequence[tuple[str, str]] = ()) -> str:
    """The LLM's greedy chat reply to a question (after `history`) about an image whose slot is given."""
    template, tokenizer = corpus.template, model.tokenizer
    ids = layout(template, tokenizer, list(history), question, n_image=len(slot), style="chat").tokens
    embeds, mask = model.embed([ids], slot[None])
    out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             stop_strings=list(template.stop_strings) or None, tokenizer=tokenizer)
    return template.clean_reply(tokenizer.decode(out[0], skip_special_tokens=True))


def oracle_check(model, corpus: Corpus, codes: SlotCodes, question: str, seed: int = 0) -> dict:
    """How well the LLM reads a clean code: the share of classes whose greedy answer to `question` names the
    class (read by the evaluation's class extractor) when the slot holds the class's typical look (its code, a
    pattern and its two concepts), one reply per class; and the share when it holds the concepts and pattern alone
    (the class is a combination of concepts: `from_concepts_accuracy`)."""
    from skingpt4.evaluation.extract import ClassExtractor
    from skingpt4.tiny.world import class_looks

    extractor, rng, replies, from_concepts = ClassExtractor(), random.Random(seed), {}, 0
    n_slot, names = model.cfg.qformer.num_query_tokens, list(corpus.concepts)
    for label in corpus.phrases:
        look = class_looks()[label]
        cues = [f"pattern:{rng.choice(corpus.patterns[label])}", f"concept:{names[look['shared']]}",
                f"concept:{names[look['own']]}"]
        replies[label] = greedy_reply(model, corpus, codes.clean([f"class:{label}", *cues], n_slot), question)
        reply = greedy_reply(model, corpus, codes.clean(cues, n_slot), question)
        from_concepts += extractor.extract(reply).label == label
    correct = sum(extractor.extract(reply).label == label for label, reply in replies.items())
    return {"accuracy": correct / len(replies), "from_concepts_accuracy": from_concepts / len(replies),
            "replies": replies}
