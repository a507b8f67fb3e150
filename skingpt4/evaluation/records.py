"""The per-case JSON record that makes every answer traceable: the case, its answers, the decoding and the model's
identity (`skingpt4.models.identity.model_identity`: config, checkpoint and projection SHA-256s)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Optional


def case_record(case, answers: list[dict], decoding, seed: Optional[int], fingerprint: dict, template: str,
                image_sha256: str, extra: Optional[dict] = None) -> dict:
    """answers: [{"prompt", "answer", "seconds", "batch_size"}]; seconds is the wall time of the batched
    call that produced the answer (shared by the `batch_size` cases answered together)."""
    return {
        "case_id": case.case_id,
        "image": str(case.image),
        "image_sha256": image_sha256,
        "label": case.label,
        "skin_type": case.skin_type,
        "answers": answers,
        "decoding": asdict(decoding),
        "seed": seed,
        "chat_template": template,
        **fingerprint,
        "timings": {"total_seconds": sum(a["seconds"] for a in answers)},
        **(extra or {}),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record_filename(case_id: str) -> str:
    """A case id (which may contain '/') -> a safe, unique-enough file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._") or "case"
    if safe != case_id:
        safe += "-" + hashlib.sha256(case_id.encode()).hexdigest()[:8]
    return safe + ".json"
