"""Demo sessions over Gradio's own HTTP routes (the page's upload, queue and heartbeat calls, made as the
browser makes them), against the demo served in this process with the tiny model: uploads owned per session,
crafted payloads refused with one clear message, nothing uploaded left on disk."""
import hashlib
import io
import json
import logging
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from skingpt4.chat import ChatEngine
from skingpt4.chat.decoding import DecodingConfig
from skingpt4.demo.app import build_demo
from skingpt4.demo.loading import ModelLoader
from skingpt4.demo.screening import BAD_REQUEST, NOT_UPLOADED_HERE
from skingpt4.demo.uploads import UploadStore

PREVIEW_S = 0.5  # how long a fully claimed cache file is kept for the browser's preview (launch.py: 20 s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bytes(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


class Page:
    """One browser session: its session hash, its heartbeat (closing it ends the session, as closing a tab
    does), and the events of the page's components, named by elem_id."""

    def __init__(self, client: "DemoClient"):
        self.client, self.hash = client, uuid.uuid4().hex[:11]
        self.heartbeat = socket.create_connection(("127.0.0.1", client.port))
        self.heartbeat.sendall(f"GET /gradio_api/heartbeat/{self.hash} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.heartbeat.recv(1024)  # the stream started: the server knows the session

    def close(self) -> None:
        self.heartbeat.close()

    def event(self, elem_id: str, event: str, data: list) -> dict:
        """Send one event; return the final message with every streamed output value collected."""
        fn_index, trigger = self.client.dependency(elem_id, event)
        body = {"data": data, "fn_index": fn_index, "trigger_id": trigger, "session_hash": self.hash,
                "event_data": None}
        return self.client.run(body, self.hash)

    def upload(self, content: bytes, name: str = "photo.png") -> str:
        return self.client.upload(content, name)

    def send_photo(self, path: str) -> dict:
        return self.event("photo", "input", [{"path": path, "url": None, "orig_name": "photo.png",
                                              "meta": {"_type": "gradio.FileData"}}])


class DemoClient:
    def __init__(self, url: str, port: int):
        self.url, self.port = url, port
        config = json.load(urllib.request.urlopen(url + "config", timeout=10))
        self.ids = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c.get("props")}
        self.deps = config["dependencies"]

    def dependency(self, elem_id: str, event: str) -> tuple[int, int]:
        target = self.ids[elem_id]
        for dep in self.deps:  # the event's Python handler (not the browser-only scroll listener)
            if [target, event] in [list(t) for t in dep["targets"]] and dep.get("backend_fn"):
                return dep["id"], target
        raise KeyError((elem_id, event))

    def upload(self, content: bytes, name: str) -> str:
        reply = httpx.post(self.url + "gradio_api/upload", files={"files": (name, content)}, timeout=30)
        reply.raise_for_status()
        return reply.json()[0]

    def run(self, body: dict, session_hash: str) -> dict:
        joined = httpx.post(self.url + "gradio_api/queue/join", content=json.dumps(body),  # NaN allowed
                            headers={"Content-Type": "application/json"}, timeout=30)
        if joined.status_code != 200:
            return {"msg": "refused at join", "status": joined.status_code, "success": False}
        with httpx.stream("GET", self.url + f"gradio_api/queue/data?session_hash={session_hash}",
                          timeout=120) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message
        raise AssertionError("no process_completed message")


def output(done: dict) -> list:
    assert done["success"], done
    return done["output"]["data"]


@pytest.fixture(scope="module")
def demo(tiny_model, tmp_path_factory):
    """The demo served here: (client, upload store, demo, app folder)."""
    root = tmp_path_factory.mktemp("demo_app") / "app"
    uploads = UploadStore(root, claim_window_s=2.0, preview_s=PREVIEW_S)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(uploads.cache_dir))
        loader = ModelLoader(lambda: ChatEngine(tiny_model)).start()
        deadline = time.monotonic() + 30
        while not loader.done and time.monotonic() < deadline:
            time.sleep(0.05)
        blocks = build_demo(loader, DecodingConfig(do_sample=False, max_new_tokens=6), uploads)
        blocks.queue(default_concurrency_limit=1)
        port = free_port()
        blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                      show_error=False, ssr_mode=False, blocked_paths=[str(uploads.sessions_dir)])
        try:
            yield DemoClient(f"http://127.0.0.1:{port}/", port), uploads, blocks, root
        finally:
            blocks.close()
            uploads.shutdown()


def cache_files(uploads: UploadStore) -> list[Path]:
    return [p for p in uploads.cache_dir.rglob("*") if p.is_file()]


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def describe(page: Page) -> str:
    """The first clinical question's answer."""
    content = output(page.event("clinical-0", "click", [True, 1.0, 0.9, 1]))[0][-1]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def test_twenty_sessions_with_the_same_photo_never_disturb_each_other(demo):
    client, uploads, blocks, root = demo
    photo = png_bytes(1)
    pages = [Page(client) for _ in range(20)]
    paths = []
    for page in pages:  # the same photo everywhere: Gradio stores it under one path
        paths.append(page.upload(photo))
        assert output(page.send_photo(paths[-1]))[1].startswith("Photo received")
    assert len(set(paths)) == 1
    reference = describe(pages[0])
    assert reference.strip()

    def private_copy(page: Page) -> Path:
        files = uploads.session_files(page.hash)
        assert len(files) == 1
        return next(iter(files))

    live = list(pages)
    for turn, page in enumerate(pages[:-1]):  # in turn: restart (and upload again) or close the tab
        if turn % 2 == 0:
            output(page.event("restart", "click", []))
            assert uploads.session_files(page.hash) == set()
            assert output(page.send_photo(page.upload(photo)))[1].startswith("Photo received")
        else:
            page.close()
            live.remove(page)
            assert wait_for(lambda: page.hash not in blocks.sessions._sessions)
        for other in live:  # every other session still holds its own copy of the photo
            copy = private_copy(other)
            assert copy.read_bytes() == photo and blocks.sessions.get(other.hash).image is not None
    assert len(live) == 11
    for page in live:  # and gets the same answer about it
        assert describe(page) == reference
    # each live session has its own folder, 0700, and only its own copy in it
    folders = {private_copy(page).parent for page in live}
    assert len(folders) == len(live) and all(f.stat().st_mode & 0o777 == 0o700 for f in folders)
    for page in live:
        page.close()
    assert wait_for(lambda: not any(uploads.sessions_dir.iterdir()))  # every session's folder is gone
    assert wait_for(lambda: not uploads.sweep() and not cache_files(uploads), timeout=PREVIEW_S + 5)


def test_another_sessions_upload_path_is_refused(demo):
    client, uploads, _, _ = demo
    victim, attacker = Page(client), Page(client)
    path = victim.upload(png_bytes(2))
    assert output(victim.send_photo(path))[1].startswith("Photo received")
    stolen = attacker.send_photo(path)  # the victim's path, sent by another session
    assert output(stolen)[1] == f"⚠️ {NOT_UPLOADED_HERE}"
    assert uploads.session_files(attacker.hash) == set()
    # nor can it name the victim's private copy (outside Gradio's cache: Gradio refuses it before the handler)
    copy = str(next(iter(uploads.session_files(victim.hash))))
    done = attacker.send_photo(copy)
    assert done["success"] is False and done["output"]["error"] == NOT_UPLOADED_HERE
    # a replayed event of the victim itself: each upload is claimed once
    assert output(victim.send_photo(path))[1] == f"⚠️ {NOT_UPLOADED_HERE}"
    # the same photo uploaded by the attacker is the attacker's own upload: allowed, in its own copy
    assert attacker.upload(png_bytes(2)) == path
    assert output(attacker.send_photo(path))[1].startswith("Photo received")
    assert uploads.session_files(attacker.hash) != uploads.session_files(victim.hash)
    victim.close(), attacker.close()


def test_crafted_payloads_get_one_clear_error_and_a_quiet_log(demo, caplog, monkeypatch):
    client, uploads, _, _ = demo
    page = Page(client)
    looked_up = []  # every host name this process resolves (the server runs in it)
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: looked_up.append(host) or resolve(host, *a, **k))
    with caplog.at_level(logging.INFO):
        cases = {
            "a URL": [{"path": "http://dns.google/x.png", "meta": {"_type": "gradio.FileData"}}],
            "a URL in the url field": [{"path": "https://dns.google/x.png", "url": "https://dns.google/x.png"}],
            "a relative path": [{"path": "../../etc/passwd"}],
            "a number": [42],
            "a string": ["/etc/passwd"],
            "a list": [[{"path": "/etc/passwd"}]],
            "two inputs": [None, None],
            "a deleted upload": [{"path": str(uploads.cache_dir / ("0" * 64) / "gone.png")}],
            "a folder": [{"path": str(uploads.cache_dir)}],
        }
        for name, data in cases.items():
            done = page.event("photo", "input", data)
            # refused before the handler, or by it (the status line): either way one clear message
            said = done["output"]["error"] if done["success"] is False else output(done)[1].removeprefix("⚠️ ")
            assert said in (BAD_REQUEST, NOT_UPLOADED_HERE), (name, done)
        for data in ([5, True, 1.0, 0.9, 1], ["hi", "yes", 1.0, 0.9, 1], ["hi", True, float("nan"), 0.9, 1],
                     ["hi", True, 1.0, 0.9, 99], ["x" * 5000, True, 1.0, 0.9, 1]):
            done = page.event("send", "click", data)
            assert done["success"] is False and done["output"]["error"], data
        # a 5000-message history (the page sends no history at all): refused, in one short log line
        history = [{"role": "user", "content": f"message {i}"} for i in range(5000)]
        done = page.event("send", "click", ["hi", True, 1.0, 0.9, 1, None, history])
        assert done["success"] is False and done["output"]["error"] == BAD_REQUEST
        for _ in range(20):  # the same crafted event again and again: still not one log line each
            page.event("send", "click", ["hi", True, 1.0, 0.9, 1, None, history])
    assert not [host for host in looked_up if "google" in str(host)]  # no URL from an event is fetched
    lines = [r for r in caplog.records if r.name.startswith(("skingpt4", "gradio", "uvicorn", "fastapi"))]
    assert len(lines) <= 10, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)
    assert "message 1" not in caplog.text and "Traceback" not in caplog.text
    page.close()


def test_empty_and_corrupt_uploads_give_a_message_and_log_no_file_name(demo, caplog):
    client, uploads, _, _ = demo
    page = Page(client)
    with caplog.at_level(logging.DEBUG):
        for content, name, message in ((b"", "secret-name-empty.png", "This file is empty"),
                                       (png_bytes(3)[:80], "secret-name-cut.png", "This image file is incomplete"),
                                       (b"notes, not a photo", "secret-name-notes.png", "This file is not an image")):
            reply = output(page.send_photo(page.upload(content, name)))
            assert reply[1].startswith(f"⚠️ {message}"), reply
            assert uploads.session_files(page.hash) == set()  # the rejected copy is gone at once
    assert "secret-name" not in caplog.text and "Traceback" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)
    page.close()


def test_a_session_that_never_opened_the_heartbeat_is_ended_when_idle(demo, monkeypatch):
    from skingpt4.demo import sessions as session_module

    client, uploads, blocks, _ = demo
    silent = Page.__new__(Page)  # no heartbeat, as a crafted client: Gradio never reports this session's end...
    silent.client, silent.hash = client, uuid.uuid4().hex[:11]
    assert output(silent.send_photo(silent.upload(png_bytes(4))))[1].startswith("Photo received")
    assert uploads.session_files(silent.hash)
    for extra in uploads.on_sweep:  # ...so the sweeper ends it once idle (here: at once)
        extra()
    assert uploads.session_files(silent.hash)  # not idle for MAX_IDLE_S yet
    monkeypatch.setattr(session_module, "MAX_IDLE_S", 0.0)
    for extra in uploads.on_sweep:
        extra()
    assert uploads.session_files(silent.hash) == set() and silent.hash not in blocks.sessions._sessions


def test_uploads_never_claimed_are_swept_and_shutdown_leaves_nothing(tmp_path):
    uploads = UploadStore(tmp_path / "app", claim_window_s=0.2, preview_s=0.1)
    ledger = uploads.ledger()
    folder = uploads.cache_dir / hashlib.sha256(b"x").hexdigest()
    folder.mkdir()
    orphan = folder / "sent-without-an-event.png"
    orphan.write_bytes(b"x")
    ledger.update([str(orphan)])  # as the upload route does
    assert str(orphan) in ledger  # Gradio still sees the set of uploaded files
    assert uploads.sweep() == 0  # its photo event may still come
    time.sleep(0.3)
    uploads.end_session("a session that never uploaded")  # a session end sweeps
    assert not orphan.exists() and not folder.exists()
    (uploads.sessions_dir / "left").mkdir()
    uploads.shutdown()
    assert not (tmp_path / "app").exists()
