"""Clocks, memory meters, device facts and measured ceilings shared by the acceptance sections."""
from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from typing import Callable, Optional

import torch
from transformers.generation.streamers import BaseStreamer

# Datasheet figures of the SXM parts (leads, not readings): HBM bandwidth in bytes/s, dense bf16 in FLOP/s.
DATASHEET = {
    "H200": (4.8e12, 989e12),
    "H100": (3.35e12, 989e12),
    "A100": (2.039e12, 312e12),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def datasheet(device: torch.device) -> tuple[Optional[float], Optional[float], str]:
    """(bandwidth B/s, bf16 FLOP/s, GPU name) from the table above; None for an unknown part or a CPU."""
    if device.type != "cuda":
        return None, None, platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device)
    for key, (bandwidth, flops) in DATASHEET.items():
        if key in name:
            if key == "H100" and "PCIe" in name:
                return 2.0e12, 756e12, name
            return bandwidth, flops, name
    return None, None, name


def median_time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` with the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_ceilings(device: torch.device) -> dict:
    """Device-to-device copy bandwidth (bytes read + written) and a large bf16 matmul rate (GPU only)."""
    if device.type != "cuda":
        return {}
    src = torch.randn(1 << 30, device=device, dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    copy_s = median_time(lambda: dst.copy_(src), device, repeats=10, warmup=3)
    del src, dst
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    mm_s = median_time(lambda: a @ b, device, repeats=10, warmup=3)
    del a, b
    torch.cuda.empty_cache()
    return {"copy_bytes_per_s": 2 * 2 * (1 << 30) / copy_s, "bf16_matmul_flops": 2 * 8192 ** 3 / mm_s}


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


def mib(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def versions() -> dict:
    import timm
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "timm": timm.__version__, "cuda": torch.version.cuda}
    try:
        import bitsandbytes

        out["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        out["bitsandbytes"] = None
    return out
