"""A calibrated differential diagnosis (docs/evaluation.md, "Differential"): every class is scored by the frozen
LLM's likelihood of that class's answer sentence, given the image and the diagnosis question.

For one image the conversation [BOS | prompt | 32 image embeddings | question] is laid out as in chat (the model's
template, `style="chat"`), and each class's answer is the sentence the model is trained on in step 2 ("This looks
like {phrase}.", from the class table) followed by the template's end symbol. A class's score is the
log-likelihood of its answer (`length_norm: none`, the default) or its mean per answer token (`length_norm: mean`,
length-normalised). On the trained tiny model the per-token mean lowers top-1 (long class phrases gain many
near-certain continuation tokens): docs/evaluation.md, "Differential". All classes are scored
in one batched forward pass that reuses the prompt: the prompt runs once, its KV cache is repeated for the classes,
and the answers run as one right-padded batch. Probabilities are softmax(score / T); T is fitted on a validation
split (`evaluate.py --task calibrate`) and kept in a file next to the projection checkpoint
(`<checkpoint stem>.calibration.json`), tied by its SHA-256 to the projection it was fitted for. When the top
probability is below `abstain_below`, the answer is "unsure, see a dermatologist".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from skingpt4.common.class_table import class_sentence, read_class_table
from skingpt4.common.config import ConfigError
from skingpt4.models.identity import model_identity
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

LENGTH_NORMS = ("none", "mean")  # a class's score: its answer's log-likelihood, or that per answer token
ABSTAIN_MESSAGE = "Unsure: the model is not confident about this image. Please see a dermatologist."
DEFAULT_ABSTAIN_BELOW = 0.5  # used when no calibration file sets its own threshold


@dataclass(frozen=True)
class ClassAnswer:
    name: str       # the class (one of the paper's 15 + Others)
    sentence: str   # the answer whose likelihood is its score


@dataclass
class Differential:
    """Classes ranked by probability; `abstained` when the top probability is below the threshold."""

    ranked: list[tuple[str, float]]   # (class, probability), most likely first
    scores: dict[str, float]          # class -> log-likelihood of its answer (uncalibrated)
    temperature: float
    abstained: bool

    @property
    def top(self) -> str:
        return self.ranked[0][0]

    def as_json(self) -> dict:
        return {"differential": [{"class": c, "probability": round(p, 6)} for c, p in self.ranked],
                "abstained": self.abstained, "temperature": self.temperature}


def class_answers(class_file: Optional[str] = None) -> list[ClassAnswer]:
    """Each class's answer: its step-2 training caption ("This looks like {phrase}.") from the class table."""
    table = read_class_table(class_file)
    return [ClassAnswer(c["name"], class_sentence(table, c["name"])) for c in table["classes"]]


def probabilities(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(scores / T) over the last dimension."""
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")
    return torch.softmax(scores.double() / temperature, dim=-1)


class DifferentialScorer:
    def __init__(self, model, answers: Sequence[ClassAnswer], question: str = CLINICAL_PROMPTS[0],
                 length_norm: str = "none"):
        if not answers:
            raise ValueError("no class answers to score")
        if length_norm not in LENGTH_NORMS:
            raise ConfigError(f"evaluation.differential.length_norm={length_norm}: choose one of {', '.join(LENGTH_NORMS)}")
        self.length_norm = length_norm
        self.model, self.answers, self.question = model, list(answers), question
        self.classes = [a.name for a in self.answers]
        layouts = [model.layout((), question, answer=a.sentence, style="chat") for a in self.answers]
        self.prompt = layouts[0].tokens[: layouts[0].prompt_length]
        self.answer_ids = [lay.tokens[lay.prompt_length:] for lay in layouts]
        if any(lay.tokens[: lay.prompt_length] != self.prompt for lay in layouts) or not all(self.answer_ids):
            raise ValueError("every class answer must follow the same prompt and have at least one token")

    @torch.no_grad()
    def scores(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """image_embeds [1,32,H] (projected) -> [C] log-likelihood of each class's answer (per token with
        length_norm "mean")."""
        model, llm = self.model, self.model.llm
        prefix, attention = model.embed([self.prompt], image_embeds)
        out = llm(inputs_embeds=prefix, attention_mask=attention, use_cache=True)
        cache, last = out.past_key_values, out.logits[0, -1].float()
        n, width = len(self.answer_ids), max(len(a) for a in self.answer_ids)
        ids = torch.full((n, width), model.tokenizer.pad_token_id, dtype=torch.long, device=model.device)
        mask = torch.zeros((n, width), dtype=torch.long, device=model.device)
        for i, answer in enumerate(self.answer_ids):
            ids[i, : len(answer)] = torch.tensor(answer, device=model.device)
            mask[i, : len(answer)] = 1
        cache.batch_repeat_interleave(n)
        full_mask = torch.cat([attention.expand(n, -1), mask], dim=1)
        logits = llm(inputs_embeds=model.embed_tokens(ids), attention_mask=full_mask, past_key_values=cache,
                     use_cache=True).logits.float()
        # The first answer token is predicted by the prompt's last position, token j by answer position j - 1.
        predicting = torch.cat([last.expand(n, 1, -1), logits[:, :-1]], dim=1)
        token_logp = torch.log_softmax(predicting, dim=-1).gather(2, ids[..., None])[..., 0]
        total = (token_logp * mask).sum(1)
        return total / mask.sum(1) if self.length_norm == "mean" else total

    def differential(self, image_embeds: torch.Tensor, temperature: float = 1.0,
                     abstain_below: Optional[float] = None) -> Differential:
        scores = self.scores(image_embeds).cpu()
        probs = probabilities(scores, temperature)
        order = torch.argsort(probs, descending=True).tolist()
        ranked = [(self.classes[i], float(probs[i])) for i in order]
        abstained = abstain_below is not None and ranked[0][1] < abstain_below
        return Differential(ranked, dict(zip(self.classes, scores.tolist())), temperature, abstained)


def reference_scores(model, image_embeds: torch.Tensor, question: str, answers: Sequence[ClassAnswer],
                     length_norm: str = "none") -> list[float]:
    """Each class in its own plain forward pass over [prompt + answer] (no cache, no batching): the independent
    reference the batched scorer is tested against."""
    out = []
    with torch.no_grad():
        for answer in answers:
            lay = model.layout((), question, answer=answer.sentence, style="chat")
            inputs = model.build_inputs(image_embeds, [lay])
            logits = model.llm(inputs_embeds=inputs["inputs_embeds"]).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            positions = range(lay.prompt_length, len(lay.tokens))
            total = sum(float(logp[p - 1, lay.tokens[p]]) for p in positions)
            out.append(total / len(positions) if length_norm == "mean" else total)
    return out


# ------------------------------------------------------------------------------------------------ calibration file
def calibration_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.calibration.json")


def write_calibration(checkpoint: str | Path, record: dict) -> Path:
    path = calibration_path(checkpoint)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return path


def read_calibration(checkpoint: Optional[str | Path], model) -> Optional[dict]:
    """The calibration fitted for this model's projection, or None when there is none. A file fitted for another
    projection (the checkpoint was retrained) is an error: its temperature would mislead."""
    if not checkpoint:
        return None
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        temperature = float(record["temperature"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"calibration file '{path}' is unreadable ({err}); delete it or fit again "
                          "(evaluate.py --task calibrate)") from None
    if record.get("projection_sha256") != model_identity(model)["projection_sha256"]:
        raise ConfigError(f"calibration file '{path}' was fitted for another projection than '{checkpoint}' holds; "
                          "fit again (evaluate.py --task calibrate) or delete it")
    if not temperature > 0:
        raise ConfigError(f"calibration file '{path}': temperature must be > 0, got {temperature}")
    return record
