"""The differential on the demo page (docs/inference.md, "Demo"): the three likeliest classes with their
probabilities, or the abstention message, shown under the disclaimer once the photo has been read. Computed once
per conversation, after the first answer, in the same queue as the answers (one model)."""
from __future__ import annotations

from typing import Optional

from skingpt4.chat.differential import (ABSTAIN_MESSAGE, DEFAULT_ABSTAIN_BELOW, DifferentialScorer, class_answers,
                                        read_calibration)
from skingpt4.common.config import ConfigError


class DifferentialPanel:
    def __init__(self):
        self._scorer: Optional[DifferentialScorer] = None
        self._settings: Optional[tuple[float, float, bool]] = None  # temperature, threshold, calibrated
        self.problem: Optional[str] = None

    def _prepare(self, engine) -> None:
        if self._scorer is None:
            model = engine.model
            try:
                fitted = read_calibration(model.cfg.ckpt, model)
            except ConfigError as err:  # a stale calibration file: say so instead of showing misleading numbers
                self.problem = str(err)
                fitted = None
            length_norm = fitted.get("length_norm", "none") if fitted else "none"  # as the temperature was fitted
            self._scorer = DifferentialScorer(model, class_answers(), length_norm=length_norm)
            self._settings = ((fitted["temperature"], fitted.get("abstain_below", DEFAULT_ABSTAIN_BELOW), True)
                              if fitted else (1.0, DEFAULT_ABSTAIN_BELOW, False))

    def markdown(self, engine, conv) -> str:
        self._prepare(engine)
        if self.problem:
            return f"Differential unavailable: {self.problem}"
        temperature, threshold, calibrated = self._settings
        result = self._scorer.differential(conv.image_embeds, temperature, threshold)
        top = " · ".join(f"{i}. {name} — {100 * p:.0f}%" for i, (name, p) in enumerate(result.ranked[:3], 1))
        how = "calibrated" if calibrated else "not calibrated"
        lines = [f"**Differential** (how likely the model finds each class's answer; {how}): {top}"]
        if result.abstained:
            reason = getattr(result, "abstain_reason", None)  # given by newer versions of the scorer
            lines.append(f"⚠️ **{ABSTAIN_MESSAGE}**" + (f" ({reason})" if reason else ""))
        return "\n\n".join(lines)
