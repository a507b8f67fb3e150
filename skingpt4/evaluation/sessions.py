"""Run questions over many cases with the chat engine: one conversation per case (all prompts in order, as
in the paper's clinical sessions), batched across cases with `ChatEngine.ask_batch`.

A case whose image is missing or unreadable, or whose conversation fails, is reported (case id, image,
reason) and left out; the other cases go on. Each batched call gets its own seed, derived from the base
seed, the run, the batch and the prompt, and recorded with the answer: a sampled answer is reproduced by
the same cases in the same batches with the same seed (batch composition matters with sampling).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from skingpt4.chat import ChatEngine, Conversation, DecodingConfig
from skingpt4.common.images import ImageError, load_image
from skingpt4.evaluation.cases import Case, CaseError

log = logging.getLogger("skingpt4.evaluation")


@dataclass
class Session:
    case: Case
    run: int
    image_sha256: str
    answers: list[dict] = field(default_factory=list)  # prompt, answer, seconds, batch_size, batch, seed, ...


@dataclass
class _Encoded:
    case: Case
    image_sha256: str
    image_embeds: object


def derive_seed(base: int, run: int, batch: int, prompt: int) -> int:
    """A 31-bit seed, stable across machines and Python versions (no hash randomisation)."""
    digest = hashlib.sha256(f"{base}:{run}:{batch}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def run_sessions(engine: ChatEngine, cases: Sequence[Case], prompts: Sequence[str], decoding: DecodingConfig,
                 *, batch_size: int, seed: int, runs: int = 1,
                 on_session: Optional[Callable[[Session], None]] = None) -> tuple[list[Session], list[dict]]:
    """-> (sessions, problems). Cases are taken `batch_size` at a time; each image is read and encoded once
    and serves all `runs` (fresh conversations each run). `on_session` is called as soon as a session is
    complete (the caller writes its record then, so a killed run keeps what was finished)."""
    if not prompts:
        raise ValueError("no prompts to ask")
    sessions, problems = [], []
    for batch, start in enumerate(range(0, len(cases), batch_size)):
        encoded = []
        for case in cases[start:start + batch_size]:
            item = _encode(engine, case, problems)
            if item is not None:
                encoded.append(item)
        for run in range(runs):
            convs = [Conversation(image_embeds=e.image_embeds) for e in encoded]
            done = [Session(e.case, run, e.image_sha256) for e in encoded]
            for p, prompt in enumerate(prompts):
                call = replace(decoding, seed=derive_seed(seed, run, batch, p))
                convs, done = _ask_all(engine, convs, done, prompt, call, batch, problems)
            for session in done:
                sessions.append(session)
                if on_session is not None:
                    on_session(session)
        log.info("evaluated %d/%d cases", min(start + batch_size, len(cases)), len(cases))
    if cases and not sessions:  # nothing to evaluate: a systematic problem, not a few bad cases
        first = problems[0]
        raise CaseError(f"all {len(cases)} case(s) failed; the first: {first['case_id']}: {first['reason']}")
    return sessions, problems


def _encode(engine: ChatEngine, case: Case, problems: list) -> Optional[_Encoded]:
    try:
        if not case.image.is_file():
            raise ImageError("missing", f"no such file '{case.image}'")
        data = case.image.read_bytes()
        image = load_image(data, name=str(case.image))
        embeds = engine.new_conversation(image).image_embeds
    except ImageError as err:
        return _problem(problems, case, f"image {err}")
    except Exception as err:  # anything else about this one case: report it, go on with the rest
        return _problem(problems, case, f"could not encode the image: {type(err).__name__}: {err}")
    return _Encoded(case, hashlib.sha256(data).hexdigest(), embeds)


def _ask_all(engine, convs, sessions, prompt, decoding, batch, problems):
    """Ask `prompt` in every conversation with one batched call; if that call fails, ask one at a time so
    that only the failing case is lost. Returns the conversations and sessions still alive."""
    if not convs:
        return convs, sessions
    started = time.perf_counter()
    try:
        replies = engine.ask_batch(convs, [prompt] * len(convs), decoding)
    except Exception as err:
        log.warning("batched call failed (%s: %s); asking case by case", type(err).__name__, err)
        replies = None
    seconds = time.perf_counter() - started
    if replies is not None:
        for conv, session, reply in zip(convs, sessions, replies):
            session.answers.append(_answer(prompt, reply, seconds, len(convs), batch, decoding, conv))
        return convs, sessions
    alive_convs, alive = [], []
    for conv, session in zip(convs, sessions):
        started = time.perf_counter()
        try:
            reply = engine.ask(conv, prompt, decoding)
        except Exception as err:
            _problem(problems, session.case, f"failed on prompt {prompt!r}: {type(err).__name__}: {err}")
            continue
        session.answers.append(_answer(prompt, reply, time.perf_counter() - started, 1, batch, decoding, conv))
        alive_convs.append(conv)
        alive.append(session)
    return alive_convs, alive


def _answer(prompt, reply, seconds, batch_size, batch, decoding, conv) -> dict:
    turn = conv.last_turn
    return {"prompt": prompt, "answer": reply, "seconds": seconds, "batch_size": batch_size, "batch": batch,
            "seed": decoding.seed, "new_tokens": turn.new_tokens if turn else None,
            "stopped_by": turn.stopped_by if turn else None}


def _problem(problems: list, case: Case, reason: str) -> None:
    log.warning("case %s skipped: %s", case.case_id, reason)
    problems.append({"case_id": case.case_id, "image": str(case.image), "reason": reason})
    return None

