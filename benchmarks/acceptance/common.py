"""Device facts and measured ceilings shared by the acceptance sections (clocks and meters: benchmarks/timing.py)."""
from __future__ import annotations

import platform
from typing import Optional

import torch

from benchmarks.timing import median_time

# Datasheet figures of the SXM parts (leads, not readings): HBM bandwidth in bytes/s, dense bf16 in FLOP/s.
DATASHEET = {
    "H200": (4.8e12, 989e12),
    "H100": (3.35e12, 989e12),
    "A100": (2.039e12, 312e12),
}


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


def measure_ceilings(device: torch.device) -> dict:
    """Device-to-device copy bandwidth (bytes read + written) and a large bf16 matmul rate (GPU only)."""
    if device.type != "cuda":
        return {}
    src = torch.randn(1 << 30, device=device, dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    copy_s = median_time(lambda: dst.copy_(src), device, repeats=10, warmup=3)
    src = dst = None  # free the 4 GiB before the matmul buffers
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    mm_s = median_time(lambda: a @ b, device, repeats=10, warmup=3)
    a = b = None
    torch.cuda.empty_cache()
    return {"copy_bytes_per_s": 2 * 2 * (1 << 30) / copy_s, "bf16_matmul_flops": 2 * 8192 ** 3 / mm_s}


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
