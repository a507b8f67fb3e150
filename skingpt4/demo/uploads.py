"""Where the demo keeps uploaded photos, and when it deletes them (docs/inference.md, Privacy).

Gradio writes every upload to its cache folder under a name made from the file's content, so the same photo
uploaded in two browser sessions has one path. Deleting "this session's upload" by that path would delete the
other session's photo too. So the demo owns its files instead:

- The app has its own folder (0700): Gradio's upload cache for this app (`uploads/`, set as GRADIO_TEMP_DIR) and
  one private folder per session (`sessions/<random>/`, 0700), which Gradio never serves.
- Every upload through `/gradio_api/upload` is counted (`UploadLedger`). A photo event may *claim* a path only
  while it has an unclaimed upload, so a path sent by another session (or replayed) is refused. A claim copies
  the file into the session's folder; the photo is read only from there, and the session deletes only its copies.
- A cache file is deleted `preview_s` after every upload of it is claimed (the browser shows the photo from it
  meanwhile); uploads never claimed, and files nobody uploaded, are deleted once `claim_window_s` old. A sweep
  runs when a session ends and every few seconds (`start_sweeper`); at shutdown the app's whole folder is removed.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger("skingpt4.demo")


class UploadRefused(Exception):
    """A photo event named a file this session may not use; `reason` is a key of app.IMAGE_PROBLEMS."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UploadLedger(set):
    """Stands in for Gradio's `Blocks.upload_file_set` (the upload route adds each file it writes): Gradio still
    sees a set of the uploaded paths, and the ledger also counts uploads per path, so each upload can be claimed
    once."""

    def __init__(self, on_upload):
        super().__init__()
        self._on_upload = on_upload

    def add(self, path) -> None:
        super().add(path)
        self._on_upload([path])

    def update(self, *paths: Iterable) -> None:
        items = [p for group in paths for p in group]
        super().update(items)
        self._on_upload(items)


@dataclass
class _Pending:
    count: int = 0            # uploads of this path not yet claimed by a photo event
    last_upload: float = 0.0  # time.monotonic() of the newest upload
    last_claim: float = -1.0  # ... and of the newest claim (-1: none yet)


@dataclass
class _Session:
    folder: Path
    files: set[Path] = field(default_factory=set)


class UploadStore:
    def __init__(self, root: Optional[str | Path] = None, claim_window_s: float = 60.0, preview_s: float = 20.0):
        """`root`: the app's private folder (made here, 0700, under the system temp folder unless given)."""
        if root is None:
            root = tempfile.mkdtemp(prefix="skingpt4-demo-")
        self.root = Path(root).resolve()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.cache_dir = self.root / "uploads"      # Gradio's upload cache for this app
        self.sessions_dir = self.root / "sessions"  # never served by Gradio (launch.py blocks it)
        for folder in (self.cache_dir, self.sessions_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
        self.claim_window_s, self.preview_s = claim_window_s, preview_s
        self._pending: dict[Path, _Pending] = {}
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ledger: Optional[UploadLedger] = None
        self.on_sweep: list = []  # more clean-up for the sweeper to run (app.py: ending idle sessions)
        self.closed = False

    # -- Gradio's side ------------------------------------------------------------------------------------------
    def ledger(self) -> UploadLedger:
        self._ledger = UploadLedger(self._uploaded)
        return self._ledger

    def _uploaded(self, paths: Iterable) -> None:
        now = time.monotonic()
        with self._lock:
            for path in paths:
                entry = self._pending.setdefault(Path(path).resolve(), _Pending())
                entry.count += 1
                entry.last_upload = now

    # -- a session's side ---------------------------------------------------------------------------------------
    def claim(self, session: str, path: str) -> Path:
        """Copy an upload of this path, not yet claimed, into the session's folder and return the copy."""
        source = Path(path).resolve()
        if self.cache_dir not in source.parents:
            raise UploadRefused("not_uploaded_here")
        with self._lock:
            entry = self._pending.get(source)
            if self.closed:  # the server is stopping
                raise UploadRefused("missing")
            if entry is None or entry.count <= 0:
                raise UploadRefused("not_uploaded_here")
            entry.count -= 1
            owner = self._session(session)
            try:
                info = os.lstat(source)
                if not stat.S_ISREG(info.st_mode):
                    raise UploadRefused("missing")
                copy = owner.folder / f"{secrets.token_hex(8)}{source.suffix[:16]}"
                shutil.copyfile(source, copy, follow_symlinks=False)
                os.chmod(copy, 0o600)
            except FileNotFoundError:
                raise UploadRefused("missing") from None
            finally:
                entry.last_claim = time.monotonic()  # once all are claimed, swept after the preview time
            owner.files.add(copy)
        return copy

    def release(self, session: str, copy: Optional[Path]) -> None:
        """Delete one of this session's copies (a replaced photo, a rejected file, Restart)."""
        if copy is None:
            return
        with self._lock:
            owner = self._sessions.get(session)
            if owner is None or copy not in owner.files:
                return  # not this session's: never delete it
            owner.files.discard(copy)
            copy.unlink(missing_ok=True)

    def end_session(self, session: str) -> None:
        """The tab was closed or reloaded: delete the session's folder, then sweep unclaimed uploads."""
        with self._lock:
            owner = self._sessions.pop(session, None)
            if owner is not None:
                shutil.rmtree(owner.folder, ignore_errors=True)
        self.sweep()

    def session_files(self, session: str) -> set[Path]:
        with self._lock:
            owner = self._sessions.get(session)
            return set(owner.files) if owner else set()

    def _session(self, session: str) -> _Session:
        owner = self._sessions.get(session)
        if owner is None:
            folder = self.sessions_dir / secrets.token_hex(16)  # not the session hash: nothing to guess from it
            folder.mkdir(mode=0o700)
            owner = self._sessions[session] = _Session(folder)
        return owner

    # -- cleaning -----------------------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Delete the cache files no photo event can still claim or the browser still show (see the module's
        docstring). Returns how many files were deleted."""
        now, wall, removed = time.monotonic(), time.time(), 0
        with self._lock:
            for path in [p for p in self.cache_dir.rglob("*") if not p.is_dir()]:
                key = path.resolve()
                entry = self._pending.get(key)
                if entry is None:  # not from the upload route (or being written right now): by its age
                    try:
                        keep = wall - path.lstat().st_mtime < self.claim_window_s
                    except FileNotFoundError:
                        continue
                elif entry.count > 0:
                    keep = now - entry.last_upload < self.claim_window_s  # its photo event may be on the way
                else:
                    keep = now - entry.last_claim < self.preview_s
                if keep:
                    continue
                self._pending.pop(key, None)
                self._remove_cache_file(path)
                removed += 1
        return removed

    def start_sweeper(self, every_s: float = 10.0) -> "UploadStore":
        def run():
            while not self._stop.wait(every_s):
                for extra in list(self.on_sweep):
                    extra()
                self.sweep()

        threading.Thread(target=run, name="skingpt4-demo-sweep", daemon=True).start()
        return self

    def shutdown(self) -> None:
        """The server stops: delete everything the app kept (cache, every session's folder)."""
        self._stop.set()
        with self._lock:
            self.closed = True
            self._pending.clear()
            self._sessions.clear()
            shutil.rmtree(self.root, ignore_errors=True)

    def _remove_cache_file(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        if self._ledger is not None:  # Gradio no longer counts it as an uploaded file (its /file= route)
            set.discard(self._ledger, str(path))
        folder = path.parent
        while folder != self.cache_dir and self.cache_dir in folder.parents:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
            folder = folder.parent
