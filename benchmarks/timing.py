"""The clocks and memory meters every benchmark uses: device-synchronised timings, medians of interleaved runs,
peak memory and per-token time stamps. One copy, so every figure is taken the same way."""
from __future__ import annotations

import os
import statistics
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from transformers.generation.streamers import BaseStreamer


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU), so that a clock read after it times the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds since it was made, with the device synchronised at each reading."""

    def __init__(self, device: torch.device):
        self.device = device
        sync(device)
        self.start = time.perf_counter()

    def read(self) -> float:
        sync(self.device)
        return time.perf_counter() - self.start


@contextmanager
def timed(device: torch.device, into: list) -> Iterator[None]:
    """`with timed(device, times): work()` appends the block's device-synchronised seconds to `times`."""
    watch = Stopwatch(device)
    yield
    into.append(watch.read())


def median_time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` with the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        with timed(device, times):
            fn()
    return statistics.median(times)


def interleaved_medians(variants: dict[str, Callable[[], object]], device: torch.device, rounds: int) -> dict:
    """{name: median seconds} of each callable, run in turn (A B C A B C ...) `rounds` times after one warm-up
    each: on a shared, noisy machine the variants see the same load, so their ratio is the figure to quote."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            with timed(device, times[name]):
                fn()
    return {name: statistics.median(t) for name, t in times.items()}


class PeakMemory:
    """Peak memory during a block, in MiB: CUDA peak allocation (and reservation), or a CPU process's resident
    set sampled every 2 ms."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = 0.0
        self.reserved_mib = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm") as statm:
            while not self._stop.is_set():
                statm.seek(0)
                self.peak_mib = max(self.peak_mib, int(statm.read().split()[1]) * page / 2**20)
                time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.reserved_mib = torch.cuda.max_memory_reserved(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


class TokenClock(BaseStreamer):
    """Time stamps of the tokens as generate hands them over (each hand-over waits for the device: the token is
    computed when it is stamped). The first hand-over is the prompt (empty with inputs_embeds) and is skipped."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        value.tolist()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass

    def ttft_ms(self) -> float:
        return (self.stamps[0] - self.start) * 1000 if self.stamps else float("nan")

    def decode_tok_s(self) -> float:
        """Decoding steps per second per sequence, after the first token."""
        if len(self.stamps) < 2:
            return float("nan")
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])
