"""Caption clean-up for training answers: collapse runs of whitespace (CSV/JSON captions carry newlines
and double spaces), strip, and optionally keep only the first `max_words` words. Case and punctuation are
kept: the captions are the LLM's target answers, not retrieval keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from skingpt4.common import registry


@dataclass
class CaptionConfig:
    max_words: Optional[int] = None


@registry.processors.register("blip_caption")
class BlipCaptionProcessor:
    Config = CaptionConfig

    def __init__(self, max_words: Optional[int] = None):
        if max_words is not None and max_words < 1:
            raise ValueError(f"max_words must be a positive number or null, got {max_words}")
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        words = str(caption).split()
        if self.max_words is not None:
            words = words[: self.max_words]
        return " ".join(words)

    def __repr__(self) -> str:
        return f"BlipCaptionProcessor(max_words={self.max_words})"
