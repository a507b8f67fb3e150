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
(`<checkpoint stem>.calibration.json`, read strictly by `calibration_file.py`), tied by its SHA-256 to the
projection it was fitted for.

`DifferentialScorer.assess` is what chat and the demo show: it abstains ("unsure, see a dermatologist") with a
reason, checked in this order: `out_of_distribution` (the photo is blank or noise, `ood.py`), `uncalibrated` (no
calibration file: the probabilities are then softmax(score) and mean nothing), `out_of_distribution` (the image
is farther from every validation image than the calibration's threshold), `low_confidence` (the top probability
is below `abstain_below`). Non-finite scores (a broken model) are an error, never NaN probabilities.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from skingpt4.chat.calibration_file import (LENGTH_NORMS, Calibration, CalibrationError, read_calibration_file,
                                            write_calibration_file)
from skingpt4.chat.ood import pixel_check
from skingpt4.common.class_table import class_sentence, read_class_table
from skingpt4.common.config import ConfigError
from skingpt4.models.identity import model_identity
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

ABSTAIN_MESSAGE = "Unsure: the model is not confident about this image. Please see a dermatologist."
ABSTAIN_MESSAGES = {  # by abstain_reason (out_of_distribution: by the check that found it)
    "uncalibrated": "Unsure: this model's probabilities are not calibrated, so it names no diagnosis. Please see a "
                    "dermatologist.",
    "out_of_distribution": "Unsure: this image is unlike the images the model was checked on. Please see a "
                           "dermatologist.",
    "blank": "Unsure: the photo looks blank (almost no detail). Please retake it, or see a dermatologist.",
    "noise": "Unsure: the photo shows no shapes, only noise. Please retake it, or see a dermatologist.",
    "low_confidence": ABSTAIN_MESSAGE,
}
DEFAULT_ABSTAIN_BELOW = 0.5  # the config's default threshold (evaluation.differential.abstain_below)


class ScoreError(ConfigError):
    """The model gave non-finite class scores: its weights or inputs are broken, and no probability is honest.
    A ConfigError, as a damaged checkpoint is (the fix: point the config at sound weights)."""


@dataclass(frozen=True)
class ClassAnswer:
    name: str       # the class (one of the paper's 15 + Others)
    sentence: str   # the answer whose likelihood is its score


@dataclass
class Differential:
    """Classes ranked by probability; `abstained` with its `abstain_reason` (`differential`: below the
    threshold; `DifferentialScorer.assess`: every reason of the module docstring)."""

    ranked: list[tuple[str, float]]   # (class, probability), most likely first
    scores: dict[str, float]          # class -> log-likelihood of its answer (uncalibrated)
    temperature: float
    abstained: bool
    calibrated: bool = False
    abstain_reason: Optional[str] = None       # uncalibrated | out_of_distribution | low_confidence
    abstain_below: Optional[float] = None
    ood: Optional[dict] = None   # "check": blank | noise | distance, with what it measured (and the threshold)

    @property
    def top(self) -> str:
        return self.ranked[0][0]

    @property
    def message(self) -> Optional[str]:
        if not self.abstained:
            return None
        check = (self.ood or {}).get("check")
        key = check if self.abstain_reason == "out_of_distribution" and check in ABSTAIN_MESSAGES else None
        return ABSTAIN_MESSAGES[key or self.abstain_reason or "low_confidence"]

    def as_json(self) -> dict:
        return {"differential": [{"class": c, "probability": round(p, 6)} for c, p in self.ranked],
                "abstained": self.abstained, "abstain_reason": self.abstain_reason if self.abstained else None,
                "calibrated": self.calibrated, "temperature": self.temperature, "abstain_below": self.abstain_below,
                "ood": self.ood, "message": self.message}


def class_answers(class_file: Optional[str] = None) -> list[ClassAnswer]:
    """Each class's answer: its step-2 training caption ("This looks like {phrase}.") from the class table."""
    table = read_class_table(class_file)
    return [ClassAnswer(c["name"], class_sentence(table, c["name"])) for c in table["classes"]]


def probabilities(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(scores / T) over the last dimension; non-finite scores are a ScoreError."""
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise ScoreError(f"the model gave {bad} non-finite class score(s) (NaN or infinity): its weights or inputs "
                         "are broken, so no probability can be given; check model.ckpt and the model's weights")
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
        return Differential(ranked, dict(zip(self.classes, scores.tolist())), temperature, abstained,
                            abstain_reason="low_confidence" if abstained else None, abstain_below=abstain_below)

    def assess(self, image_embeds: torch.Tensor, calibration: Optional[Calibration],
               image: Optional[Image.Image | np.ndarray] = None) -> Differential:
        """What chat and the demo show for one image: its differential under `calibration` (None: uncalibrated,
        T = 1, always abstains), abstaining when `image` (the photo, when given: PIL or an RGB array) is blank or
        noise, when the image is out of the calibration's distribution, and below its threshold. The calibration
        must have been fitted with this scorer's length_norm and question (`check_calibration_fits`)."""
        if calibration is not None:
            check_calibration_fits(calibration, self.length_norm, self.question)
        temperature = calibration.temperature if calibration else 1.0
        threshold = calibration.abstain_below if calibration else DEFAULT_ABSTAIN_BELOW
        result = self.differential(image_embeds, temperature, threshold)
        result.calibrated = calibration is not None
        reason, ood = None, pixel_check(image) if image is not None else None
        if ood is not None:
            reason = "out_of_distribution"
        elif calibration is None:
            reason = "uncalibrated"
        else:
            ood = {"check": "distance", "distance": round(calibration.ood.distance(image_embeds), 6),
                   "threshold": round(calibration.ood.threshold, 6)}
            if ood["distance"] > ood["threshold"]:
                reason = "out_of_distribution"
            elif result.abstained:
                reason = "low_confidence"
        result.abstained, result.abstain_reason, result.ood = reason is not None, reason, ood
        return result


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


def write_calibration(checkpoint: str | Path, calibration: Calibration) -> Path:
    return write_calibration_file(calibration_path(checkpoint), calibration)


def load_calibration(checkpoint: Optional[str | Path], model) -> Optional[Calibration]:
    """The calibration fitted for this model's projection, or None when there is none (no checkpoint, or no file
    next to it). A file that fails the strict checks, or was fitted for another projection (the checkpoint was
    retrained), is a CalibrationError: its numbers would mislead."""
    if not checkpoint:
        return None
    path = calibration_path(checkpoint)
    if not os.path.lexists(path):
        return None
    calibration = read_calibration_file(path)
    if calibration.projection_sha256 != model_identity(model)["projection_sha256"]:
        raise CalibrationError(f"calibration file '{path}' was fitted for another projection than '{checkpoint}' "
                               "holds; fit again (evaluate.py --task calibrate) or delete it")
    return calibration


def read_calibration(checkpoint: Optional[str | Path], model) -> Optional[dict]:
    """`load_calibration` as the file's JSON object (validated), for readers that want a dict."""
    calibration = load_calibration(checkpoint, model)
    return calibration.as_json() if calibration else None


def check_calibration_fits(calibration: Calibration, length_norm: str, question: str) -> None:
    """A temperature fitted on scores computed another way does not apply: refuse it, naming both."""
    where = f"calibration file '{calibration.path}'"
    if calibration.length_norm != length_norm:
        raise CalibrationError(f"{where} was fitted with length_norm={calibration.length_norm}, the scores here use "
                               f"length_norm={length_norm}; use the same setting or fit again")
    if calibration.question != question:
        raise CalibrationError(f"{where} was fitted for the question {calibration.question!r}, the scores here are "
                               f"for {question!r}; use the same question or fit again")
