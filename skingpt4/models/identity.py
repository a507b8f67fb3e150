"""Which model this is: variant, LLM folder, checkpoint and the SHA-256 of the projection in use (the chat CLI's
provenance, the demo's model line and the export's record all describe a model with it)."""
from __future__ import annotations

from pathlib import Path

from skingpt4.common.fingerprint import sha256_state_dict


def model_identity(model) -> dict:
    """Variant, LLM folder, checkpoint file name and the SHA-256 of the projection that answers (also when it
    was drawn at random: no checkpoint)."""
    cfg = model.cfg
    ckpt = str(cfg.ckpt) if cfg.get("ckpt") else None
    variant = str(cfg.variant)
    return {"variant": variant, "llm_model": str(cfg.llm_model),
            "checkpoint": ckpt, "checkpoint_name": Path(ckpt).name if ckpt else None,
            "projection_sha256": sha256_state_dict(model.trainable_state_dict()),
            "tiny": variant.startswith("tiny")}
