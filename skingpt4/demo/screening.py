"""Every event's payload is checked against what the page itself sends before Gradio touches it: a crafted
request gets one clear message (not `{"error": null}` with a server traceback), Gradio never resolves or fetches
a path or URL from it, and the log gets at most one line per kind of refusal a minute."""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Optional

import gradio as gr

log = logging.getLogger("skingpt4.demo")

MAX_TEXT_CHARS = 4000   # a question; the engine refuses long prompts anyway, this keeps the payload small
MAX_PATH_CHARS = 1024
BAD_REQUEST = "This request does not match what the page sends, so it was not run. Please reload the page."
NOT_UPLOADED_HERE = "That file was not uploaded through this page, so it cannot be used. Please upload the photo again."


class Refused(Exception):
    def __init__(self, kind: str, message: str = BAD_REQUEST):
        super().__init__(kind)
        self.kind, self.message = kind, message


class QuietLog:
    """Logs a kind of event at most once per `every_s` seconds, counting the ones left out."""

    def __init__(self, every_s: float = 60.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -math.inf) < self.every_s:
                self._skipped[kind] = self._skipped.get(kind, 0) + 1
                return
            skipped = self._skipped.pop(kind, 0)
            self._last[kind] = now
        log.warning("%s%s", message, f" ({skipped} more since the last such line)" if skipped else "")


def _check_photo(value: Any) -> Optional[dict]:
    """The photo: nothing (cleared) or a file reference the upload route returned. Only `path` is kept, so no
    URL (or anything else the client adds) reaches Gradio's file handling."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Refused("photo payload is not a file reference")
    path = value.get("path")
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\x00" in path:
        raise Refused("photo payload has no usable path")
    if "://" in path or not path.startswith("/"):  # a URL, or a relative path: never an upload's path
        raise Refused("photo payload names a URL or a relative path", NOT_UPLOADED_HERE)
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def _check(component: gr.components.Component, value: Any) -> Any:
    if isinstance(component, gr.Image):
        return _check_photo(value)
    if isinstance(component, gr.Textbox):
        if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
            raise Refused("question is not a string of at most %d characters" % MAX_TEXT_CHARS,
                          f"The question must be text of at most {MAX_TEXT_CHARS} characters.")
        return value
    if isinstance(component, gr.Checkbox):
        if not isinstance(value, bool):
            raise Refused("checkbox value is not true/false")
        return value
    if isinstance(component, gr.Slider):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not component.minimum <= value <= component.maximum:
            raise Refused("slider value is not a number in its range")
        return value
    raise Refused(f"unexpected input component {type(component).__name__}")


def screen_inputs(block_fn, inputs: Any) -> list:
    """The event's inputs, checked and reduced to what its handler uses; raises Refused."""
    components = list(block_fn.inputs)
    if not isinstance(inputs, list) or len(inputs) != len(components):
        raise Refused("wrong number of inputs")
    return [_check(component, value) for component, value in zip(components, inputs)]
