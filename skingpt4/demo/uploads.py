"""Uploaded photos are deleted when the browser session ends (docs/inference.md, Privacy): Gradio stores each upload in its
cache folder (`GRADIO_TEMP_DIR`, one sub-folder per file) and would keep it there."""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from pathlib import Path
from typing import Optional

log = logging.getLogger("skingpt4.demo")


class UploadJanitor:
    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir).resolve()
        self._by_session: dict[str, set[Path]] = defaultdict(set)
        self._lock = threading.Lock()

    def track(self, session: str, path: str | Path) -> None:
        with self._lock:
            self._by_session[session].add(Path(path))

    def delete(self, session: str, path: Optional[str | Path]) -> None:
        """Delete one upload of this session now (a replaced photo, a rejected file, Restart)."""
        if path is None:
            return
        with self._lock:
            self._by_session[session].discard(Path(path))
        self._remove(Path(path))

    def end_session(self, session: str) -> None:
        """The tab was closed or reloaded: delete everything the session uploaded."""
        with self._lock:
            paths = self._by_session.pop(session, set())
        for path in paths:
            self._remove(path)

    def _remove(self, path: Path) -> None:
        path = path.resolve()
        if self.cache_dir not in path.parents:  # only ever delete inside Gradio's cache
            log.warning("not deleting an upload outside the Gradio cache folder")
            return
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder != self.cache_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
