"""Which model answered, and from what: shown on the demo page and written into the chat CLI's JSON, so a
reader knows the answering model and every sampled answer can be reproduced from its record."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from skingpt4.common.fingerprint import sha256_file
from skingpt4.models.identity import model_identity

SYNTHETIC_NOTE = "tiny synthetic-world model — not medical"


def package_version() -> str:
    from skingpt4 import __version__

    return __version__


def draw_seed() -> int:
    """A fresh seed for a sampled answer that has none, so that it is recorded and the answer reproducible."""
    return secrets.randbelow(2**31)


def describe_model(identity: dict) -> str:
    """One line for the page: 'Model: llama2_13b_chat (Llama-2-13b-chat-hf) · checkpoint x.pth · projection 1a2b…'."""
    checkpoint = identity["checkpoint_name"] or "none (random projection)"
    text = (f"Model: {identity['variant']} ({Path(identity['llm_model']).name}) · checkpoint {checkpoint} · "
            f"projection {identity['projection_sha256'][:12]}")
    return f"{text} · ⚠️ {SYNTHETIC_NOTE}" if identity["synthetic"] else text


def provenance(model, cfg_path: str, image_path: str, template: str) -> dict:
    """What the chat CLI's JSON records next to the answers."""
    identity = model_identity(model)
    return {
        **{key: identity[key] for key in ("variant", "llm_model")},
        "config": str(cfg_path),
        "config_sha256": sha256_file(cfg_path),
        **{key: identity[key] for key in ("model_config_sha256", "checkpoint", "checkpoint_sha256",
                                          "projection_sha256")},
        "image_sha256": sha256_file(image_path),
        "chat_template": template,
        "skingpt4_version": package_version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"note": SYNTHETIC_NOTE} if identity["synthetic"] else {}),
    }


def seeded(decoding, seed: Optional[int] = None):
    """`decoding` with a seed: the given one, its own, or (sampling without one) a fresh draw."""
    import dataclasses

    if seed is not None:
        return dataclasses.replace(decoding, seed=seed)
    if decoding.do_sample and decoding.seed is None:
        return dataclasses.replace(decoding, seed=draw_seed())
    return decoding
