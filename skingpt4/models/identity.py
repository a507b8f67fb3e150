"""Which model this is: the one description of a model's identity. The chat CLI's provenance, the demo's model
line, the evaluation records, the calibration file and the export's record all describe a model with it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from skingpt4.common.fingerprint import sha256_file, sha256_json, sha256_state_dict


def model_identity(model, checkpoint: Optional[str | Path] = None) -> dict:
    """Variant, LLM folder, chat template, the checkpoint in use (`checkpoint`, default `model.ckpt`) with its
    SHA-256, the SHA-256 of the resolved model config and of the projection that answers (also when it was drawn
    at random: no checkpoint), and whether the model is of the synthetic tiny world (the variant's `synthetic`)."""
    exported = getattr(model, "exported_identity", None)
    if exported is not None and checkpoint is None:  # the client side of a served model: the export's record
        return dict(exported)
    cfg = model.cfg
    checkpoint = str(checkpoint) if checkpoint else (str(cfg.ckpt) if cfg.get("ckpt") else None)
    return {"variant": str(cfg.variant), "llm_model": str(cfg.llm_model), "chat_template": model.template.name,
            "checkpoint": checkpoint, "checkpoint_name": Path(checkpoint).name if checkpoint else None,
            "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
            "model_config_sha256": sha256_json(cfg),
            "projection_sha256": sha256_state_dict(model.trainable_state_dict()),
            "synthetic": bool(cfg.get("synthetic", False))}
