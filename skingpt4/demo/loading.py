"""Load the model in the background so the page can show progress (a 13B LLM takes minutes to load)."""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Optional

from skingpt4.chat.engine import ChatEngine
from skingpt4.chat.provenance import describe_model
from skingpt4.models.identity import model_identity
from skingpt4.common.config import ConfigError

log = logging.getLogger("skingpt4.demo")


class _Steps(logging.Handler):
    """Keeps the package's log lines written while loading: they name each file as it is read."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class ModelLoader:
    def __init__(self, build: Callable[[], ChatEngine]):
        self._build = build
        self._steps = _Steps()
        self._started = 0.0
        self._finished: Optional[float] = None
        self.engine: Optional[ChatEngine] = None
        self.error: Optional[str] = None
        self.model_line: Optional[str] = None  # which model answers, for the page (once loaded)

    def start(self) -> "ModelLoader":
        self._started = time.monotonic()
        threading.Thread(target=self._load, name="skingpt4-load-model", daemon=True).start()
        return self

    def _load(self) -> None:
        package_log = logging.getLogger("skingpt4")
        package_log.addHandler(self._steps)
        try:
            engine = self._build()
            if hasattr(engine, "model"):
                self.model_line = describe_model(model_identity(engine.model))
            self.engine = engine
            log.info("model ready after %.0f s", time.monotonic() - self._started)
        except Exception as err:  # shown on the page; the server keeps running so the message is seen
            if not isinstance(err, ConfigError):  # not a mistake in the config: keep the traceback for a bug report
                log.exception("loading the model failed")
            self.error = f"{type(err).__name__}: {' '.join(str(err).split())}"
            # the terminal gets the same one line as the page (a config mistake: no traceback)
            print(f"error: loading the model failed: {self.error}", file=sys.stderr, flush=True)
        finally:
            self._finished = time.monotonic()
            package_log.removeHandler(self._steps)

    @property
    def done(self) -> bool:
        return self._finished is not None

    def status(self) -> str:
        """One Markdown line for the page."""
        if self.error:
            return f"**Loading the model failed** ({self.error}). Fix the config and restart the demo."
        if self.engine is not None:
            return f"Model ready (loaded in {self._finished - self._started:.0f} s). Upload a photo to start."
        elapsed = time.monotonic() - self._started
        last = self._steps.lines[-1][:120] if self._steps.lines else "building the model"
        return (f"**Loading the model… {elapsed:.0f} s** ({len(self._steps.lines)} step(s) done; last: {last}). "
                "A 13B model takes a few minutes; you can upload a photo meanwhile.")
