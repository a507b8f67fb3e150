"""What each browser session holds, kept on the server under Gradio's session id (the browser sends only its
questions and its photo, never the history: a crafted history cannot reach the model or the log)."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Optional

from PIL import Image

from skingpt4.chat.engine import Conversation

# The page shows at most this many messages; after MAX_EXCHANGES questions the session asks for a Restart
# (the engine already drops the oldest exchanges from the model's view long before).
MAX_EXCHANGES = 50
MAX_SHOWN_MESSAGES = 2 * MAX_EXCHANGES
# A session with no event for this long is ended as if its tab were closed (a client that never opened the
# page's heartbeat, so Gradio never reports its end).
MAX_IDLE_S = 3600.0


@dataclasses.dataclass
class ChatSession:
    image: Optional[Image.Image] = None
    photo_copy: Optional[Path] = None        # the session's private copy of the upload (uploads.UploadStore)
    conv: Optional[Conversation] = None      # made on the first question (the model may still be loading)
    differential: Optional[str] = None       # the photo's differential, shown once its conversation exists
    history: list = dataclasses.field(default_factory=list)  # the messages the page shows
    exchanges: int = 0
    last_event: float = dataclasses.field(default_factory=time.monotonic)

    def forget_photo(self) -> None:
        self.image = self.photo_copy = self.conv = self.differential = None
        self.history = []
        self.exchanges = 0

    def shown_history(self) -> list:
        return self.history[-MAX_SHOWN_MESSAGES:]


class SessionRegistry:
    def __init__(self):
        self._sessions: dict[str, ChatSession] = {}
        self._lock = threading.Lock()

    def get(self, session_hash: str) -> ChatSession:
        with self._lock:
            session = self._sessions.setdefault(session_hash, ChatSession())
            session.last_event = time.monotonic()
            return session

    def idle(self, max_idle_s: Optional[float] = None) -> list[str]:
        """The sessions with no event for `max_idle_s` seconds (default MAX_IDLE_S)."""
        now, max_idle_s = time.monotonic(), MAX_IDLE_S if max_idle_s is None else max_idle_s
        with self._lock:
            return [key for key, session in self._sessions.items() if now - session.last_event > max_idle_s]

    def end(self, session_hash: str) -> Optional[ChatSession]:
        """Drop the session (its photo and chat leave memory once its last answer is done)."""
        with self._lock:
            session = self._sessions.pop(session_hash, None)
        if session is not None:
            session.forget_photo()
        return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
