"""How replies are decoded: greedy, sampling or beam search, with limits (docs/prompts.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class DecodingConfig:
    """Decoding settings of one question (also the `run.decoding` section of an eval config).

    The defaults are the original SkinGPT-4 demo's: sampling at temperature 1.0 with top_p 0.9 (and
    transformers' then-default top_k 50), at most 300 new tokens, a 2000-token prompt + reply budget.
    """

    do_sample: bool = True          # False: greedy (num_beams 1) or beam search (num_beams > 1)
    temperature: float = 1.0        # sampling only
    top_p: float = 0.9              # sampling only: nucleus
    top_k: int = 50                 # sampling only: 0 switches it off
    num_beams: int = 1              # > 1: beam search (needs do_sample false)
    repetition_penalty: float = 1.0
    max_new_tokens: int = 300
    max_length: int = 2000          # prompt (image included) + reply; also capped by the LLM's context
    seed: Optional[int] = None      # makes sampling reproducible; None: a fresh random draw each time

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "DecodingConfig":
        problems = []
        if self.do_sample and not self.temperature > 0:
            problems.append(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.num_beams < 1:
            problems.append(f"num_beams must be >= 1, got {self.num_beams}")
        if self.num_beams > 1 and self.do_sample:
            problems.append("beam search (num_beams > 1) needs do_sample false")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_length < 2:
            problems.append(f"max_length must be >= 2, got {self.max_length}")
        if problems:
            raise ValueError("bad decoding settings: " + "; ".join(problems))
        return self

    def generate_kwargs(self) -> dict:
        """The matching keyword arguments of transformers' `generate` (no limits: the engine sets those)."""
        if self.do_sample:
            return dict(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                        num_beams=1, repetition_penalty=self.repetition_penalty)
        # None clears a sampling default that the LLM's own generation_config.json may carry
        return dict(do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=self.num_beams,
                    repetition_penalty=self.repetition_penalty)
