"""Counting bad samples across DataLoader worker processes.

A dataset returns None for a sample whose image cannot be used and records why here. The counts live in
a small shared-memory array, so the training process sees what its workers skipped (a per-process
counter would stay at zero in the main process whenever num_workers > 0).
"""
from __future__ import annotations

import logging
import multiprocessing

from skingpt4.common.images import REASONS as IMAGE_REASONS

logger = logging.getLogger(__name__)

# Image reasons (see skingpt4.common.images) plus a record that lacks a usable caption.
REASONS = IMAGE_REASONS + ("bad_record",)


class BadSampleCounter:
    def __init__(self, source: str):
        self.source = source
        self._counts = multiprocessing.Array("q", len(REASONS))  # shared with forked/spawned workers

    def add(self, reason: str, detail: str) -> None:
        index = REASONS.index(reason)
        with self._counts.get_lock():
            self._counts[index] += 1
        logger.warning("dataset '%s': skipping a bad sample (%s): %s", self.source, reason, detail)

    def counts(self) -> dict[str, int]:
        """{reason: count} of the reasons seen so far (zero counts left out)."""
        with self._counts.get_lock():
            return {reason: n for reason, n in zip(REASONS, self._counts[:]) if n}

    def total(self) -> int:
        return sum(self.counts().values())
