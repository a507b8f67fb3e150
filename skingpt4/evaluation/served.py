"""`evaluate.py --server URL --export-dir DIR`: the clinical protocol, the metrics, consistency and response-time
tasks over a served model (docs/evaluation.md, "Against a server").

The tasks run unchanged on a `RemoteChatEngine` (skingpt4/chat/remote_engine.py): each batch of conversations
goes out as concurrent requests (at most `concurrency` in flight; the server batches them), each carrying the
project's exact prompt embeddings, so greedy answers are the local ones. The records and the summary carry the
exported model's identity (the same fields as a local run) plus `server` and `served_model`. The differential
(likelihood of each class's answer) needs prompt logprobs, which vLLM does not give for prompt embeddings: the
metrics summary says so instead of comparing it with the free-text reading.
"""
from __future__ import annotations

from pathlib import Path

from skingpt4.common.config import ConfigError

SERVED_TASKS = ("clinical", "metrics", "consistency", "response_time")  # the tasks that only ask questions
DIFFERENTIAL_NOT_SERVED = ("not served: the differential needs prompt logprobs of each class's answer, which vLLM "
                           "does not return for prompt embeddings; run this task locally for it")


def check_served_task(task: str) -> None:
    if task not in SERVED_TASKS:
        raise ConfigError(f"--server: the {task} task needs the model's likelihoods or swaps checkpoints, which a "
                          f"served model does not give; tasks that can be served: {', '.join(SERVED_TASKS)}")


def served_engine(server: str, export_dir: str | Path, concurrency: int, timeout: float, device: str = "cpu"):
    """A RemoteChatEngine on the export's client side, checked against the server's model list, whose
    `served_identity()` is what the tasks record as the model's fingerprint."""
    from skingpt4.chat.remote_engine import RemoteChatEngine

    engine = RemoteChatEngine.from_export(export_dir, server, device=device, timeout=timeout,
                                          concurrency=concurrency)
    from skingpt4.models.identity import model_identity

    identity = model_identity(engine.model)  # the export's record of the model (remote_engine.load_client_model)
    identity.update(server=engine.address.url, served_model=engine.served_model)
    engine.served_identity = lambda: dict(identity)
    return engine
