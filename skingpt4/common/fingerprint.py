"""SHA-256 fingerprints of what an answer depends on: files (checkpoints, images), configs (canonical JSON) and
weights (the projection actually in use, also when it was drawn at random and no file exists)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from skingpt4.common.config import to_plain

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    """Of the canonical JSON (sorted keys, no spaces), so equal configs hash equal."""
    return hashlib.sha256(json.dumps(to_plain(data), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Of the tensors' names, shapes, dtypes and bytes, in name order (the projection actually used, also
    when it was randomly initialised and no checkpoint file exists)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
