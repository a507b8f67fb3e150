"""The differential on the demo page (docs/inference.md, "Demo"): the three likeliest classes with their
probabilities, or the abstention message with its reason, shown under the answer once the photo has been read.
Computed once per conversation, after the first answer, in the same queue as the answers (one model).

It shows what `DifferentialScorer.assess` decides, as chat does: uncalibrated output, a blank or noisy photo and an
image unlike the calibration's validation images all abstain. A served model (vLLM with prompt embeddings) has no
differential: it needs prompt logprobs, which that path does not give (docs/scaling.md)."""
from __future__ import annotations

from typing import Optional

from PIL import Image

from skingpt4.chat.differential import DifferentialScorer, class_answers, load_calibration
from skingpt4.common.config import ConfigError

NOT_SERVED = "Differential unavailable: the served model gives no class likelihoods (docs/scaling.md)."


class DifferentialPanel:
    def __init__(self):
        self._scorer: Optional[DifferentialScorer] = None
        self._calibration = None
        self.problem: Optional[str] = None

    def _prepare(self, engine) -> None:
        if self._scorer is not None or self.problem:
            return
        if getattr(engine, "served_model", None):  # RemoteChatEngine: the LLM runs on the server
            self.problem = NOT_SERVED
            return
        model = engine.model
        try:
            self._calibration = load_calibration(model.cfg.ckpt, model)
        except ConfigError as err:  # a stale or broken calibration file: say so instead of showing misleading numbers
            self.problem = f"Differential unavailable: {err}"
            return
        cal = self._calibration
        self._scorer = (DifferentialScorer(model, class_answers(), cal.question, cal.length_norm) if cal
                        else DifferentialScorer(model, class_answers()))

    def markdown(self, engine, conv, image: Optional[Image.Image] = None) -> str:
        self._prepare(engine)
        if self.problem:
            return self.problem
        result = self._scorer.assess(conv.image_embeds, self._calibration, image)
        top = " · ".join(f"{i}. {name} — {100 * p:.0f}%" for i, (name, p) in enumerate(result.ranked[:3], 1))
        # short: on a phone the answer and this panel share one screen (page_layout.py); the message says why
        how = "calibrated" if result.calibrated else "not calibrated"
        lines = [f"**Differential** ({how}): {top}"]
        if result.abstained:
            lines.append(f"⚠️ **{result.message}**")
        return "\n\n".join(lines)
