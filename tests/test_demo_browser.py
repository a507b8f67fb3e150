"""The demo in a real browser (Debian chromium driven by playwright, headless): `python demo.py` with the tiny
model on CPU, on a free loopback port, one server and one browser for the whole module (starting them takes
most of the time). Realistic photos: a lesion from the synthetic Dermnet test split, a blank image, RGB noise."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[1]
NETGUARD_DIR = Path(__file__).parent / "netguard"
QUESTION = "What does this lesion look like?"
SIZES = {"laptop": (1280, 800), "phone": (390, 844)}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, tiny_assets: Path, folder: Path):
        self.port, self.cache, self.log_file = free_port(), folder / "gradio_cache", folder / "demo.log"
        self.cache.mkdir()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, GRADIO_TEMP_DIR=str(self.cache), SKINGPT4_TINY_ASSETS=str(tiny_assets),
                   SKINGPT4_TINY_CKPT=str(tiny_assets / "projection.pth"), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(NETGUARD_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "demo.py", "--cfg-path", "eval_configs/skingpt4_tiny.yaml", "--port", str(self.port),
               "--options", "run.decoding.max_new_tokens=48", "run.decoding.do_sample=false"]
        with open(self.log_file, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"demo.py exited with {self.proc.returncode}:\n{self.log_file.read_text()}")
            try:
                if urllib.request.urlopen(self.url, timeout=2).status == 200:
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"demo.py did not answer within 120 s:\n{self.log_file.read_text()}")
                time.sleep(0.5)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def files(self) -> list[Path]:
        return [p for p in self.cache.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def server(tiny_assets, tmp_path_factory):
    running = Server(tiny_assets, tmp_path_factory.mktemp("demo_server"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A lesion of the synthetic Dermnet test split (data_prep/make_synthetic.py), a blank image, RGB noise."""
    from data_prep.make_synthetic import make_dermnet

    folder = tmp_path_factory.mktemp("photos")
    make_dermnet(folder / "raw", {"test": 1}, size=256, seed=0)
    lesion = sorted((folder / "raw" / "dermnet" / "test").rglob("*.jpg"))[0]
    blank, noise = folder / "blank.png", folder / "noise.png"
    Image.new("RGB", (512, 384), (255, 255, 255)).save(blank)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (384, 512, 3), dtype=np.uint8)).save(noise)
    return {"lesion": lesion, "blank": blank, "noise": noise}


@pytest.fixture
def new_page(browser, server):
    """Opens pages (each its own browser context: a session); closes what a test left open, even if it failed."""
    opened = []

    def open_page(size=(1280, 800), outside=None):
        page = _open(browser, server, size, outside)
        opened.append(page.context)
        return page

    yield open_page
    for context in opened:
        try:
            context.close()
        except Exception:  # closed by the test already
            pass


def _open(browser, server, size, outside):
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1).new_page()
    if outside is not None:
        local = (server.url, "data:", "blob:")
        page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
    page.goto(server.url)
    expect(page.locator("#status")).to_contain_text("Model ready", timeout=60_000)
    return page


def box(page, selector: str) -> dict:
    return page.locator(selector).last.bounding_box()


def in_view(page, selector: str) -> bool:
    """Wholly inside the window and not under the fixed disclaimer bar."""
    bar, target = box(page, "#topbar"), box(page, selector)
    height = page.viewport_size["height"]
    return (target is not None and bar["y"] + bar["height"] - 1 <= target["y"]
            and target["y"] + target["height"] <= height + 1)


# Records every text the last bot message shows, to see the answer arrive in pieces.
WATCH_STREAM = """() => {
  window.__shown = [];
  new MutationObserver(() => {
    const bots = document.querySelectorAll('#chat [data-testid="bot"]');
    if (bots.length) window.__shown.push(bots[bots.length - 1].innerText);
  }).observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true});
}"""


def test_first_screen_disclaimer_model_status_and_touch_targets(new_page):
    from playwright.sync_api import expect

    outside = []
    for name, size in SIZES.items():
        page = new_page(size, outside)
        expect(page.locator("#disclaimer")).to_contain_text("not a doctor")
        expect(page.locator("#disclaimer")).to_contain_text("emergency")
        expect(page.locator("#model-info")).to_contain_text("Model: tiny (llm)")
        expect(page.locator("#model-info .not-medical")).to_contain_text("not medical")
        for selector in ("#disclaimer", "#model-info .not-medical"):  # seen without scrolling
            shown = box(page, selector)
            assert shown["y"] >= 0 and shown["y"] + shown["height"] <= size[1], (name, selector, shown)
        for selector in ("#photo", "#clinical-0", "#clinical-3", "#chat", "#question", "#send", "#stop"):
            assert in_view(page, selector), (name, selector, box(page, selector))
        for button in page.locator("button:visible").all():  # every button a finger can hit
            shape = button.bounding_box()
            assert shape["height"] >= 44 and shape["width"] >= 44, (name, button.inner_text(), shape)
        # the bar stays at the top while the page scrolls (Gradio's container clips a sticky one)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_timeout(100)
        assert page.evaluate("window.scrollY") > 0 and box(page, "#topbar")["y"] == 0
        assert box(page, "#disclaimer")["height"] < size[1] / 6, name  # and covers little of the screen
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]  # nothing sticks out sideways
        page.context.close()
    assert outside == [], f"the page reached outside the machine: {outside}"


@pytest.mark.parametrize("size_name", list(SIZES))
def test_one_click_shows_the_answer_and_the_differential_in_view(new_page, photos, size_name, tmp_path):
    from playwright.sync_api import expect

    size = SIZES[size_name]
    page = new_page(size)
    screens = tmp_path / "screens"
    screens.mkdir()
    for photo_name, photo in photos.items():
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        expect(page.locator("#status")).to_contain_text("Photo received", timeout=30_000)
        if photo_name == "lesion":  # from the top of the page: everything on one screen
            page.evaluate("window.scrollTo(0, 0)")
            page.evaluate(WATCH_STREAM)
            on_screen = ('#chat [data-testid="bot"]', "#differential", "#photo", "#clinical-0", "#clinical-3")
        else:  # from the bottom of the page: the answer is brought into view
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            on_screen = ('#chat [data-testid="bot"]', "#differential")
        page.click("#clinical-0")
        expect(page.locator("#status")).to_contain_text("Done.", timeout=60_000)
        differential = page.locator("#differential")
        expect(differential).to_contain_text("Differential", timeout=30_000)
        expect(differential).to_contain_text("3. ")
        if photo_name in ("blank", "noise"):  # out of distribution: the page names no class
            expect(differential).to_contain_text("looks blank" if photo_name == "blank" else "only noise")
        page.wait_for_timeout(300)  # the scroll after the differential
        answer = page.locator('#chat [data-testid="bot"]').last.inner_text()
        assert answer.strip() and answer.strip() != "…"
        shot = screens / f"demo_{size_name}_{photo_name}.png"
        page.screenshot(path=str(shot))  # the screen as it is after the click (also when a check below fails)
        assert shot.stat().st_size > 10_000
        for selector in on_screen:
            assert in_view(page, selector), (size_name, photo_name, selector, box(page, selector), str(shot))
        if photo_name == "lesion":
            shown = [s for s in page.evaluate("window.__shown") if s.strip() and s.strip() != "…"]
            assert len(set(shown)) >= 3, f"the answer did not arrive in pieces: {shown}"
    page.context.close()
    if os.environ.get("SKINGPT4_SCREENSHOTS"):  # e.g. docs/img
        for png in screens.glob("demo_*_lesion.png"):
            shutil.copy(png, Path(os.environ["SKINGPT4_SCREENSHOTS"]) / png.name)


def test_stop_cancels_the_answer(new_page, server, photos):
    from playwright.sync_api import expect

    config = json.load(urllib.request.urlopen(server.url + "config", timeout=10))
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c.get("props")}
    answering = {d["id"] for d in config["dependencies"] if d.get("backend_fn") and any(
        t[0] in (ids["send"], ids["question"], ids["clinical-0"]) for t in d["targets"])}
    cancelled = {i for d in config["dependencies"] if [ids["stop"], "click"] in [list(t) for t in d["targets"]]
                 for i in d["cancels"]}  # Gradio adds the cancelling as a dependency of its own
    assert answering and answering <= cancelled
    page = new_page()
    page.locator("#photo input[type=file]").set_input_files(str(photos["lesion"]))
    expect(page.locator("#status")).to_contain_text("Photo received", timeout=30_000)
    page.click("#clinical-1")
    page.click("#stop")
    expect(page.locator("#status")).to_contain_text("Stopped.", timeout=30_000)
    page.click("#clinical-0")  # the session goes on
    expect(page.locator("#status")).to_contain_text("Done.", timeout=60_000)
    page.context.close()


def crafted_photo_event(url: str, path: str) -> dict:
    """POST a photo event naming `path` straight to the queue, as a crafted client would."""
    config = json.load(urllib.request.urlopen(url + "config", timeout=10))
    photo = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "photo")
    dep = next(d for d in config["dependencies"] if [photo, "input"] in [list(t) for t in d["targets"]])
    session = uuid.uuid4().hex[:10]
    body = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}], "fn_index": dep["id"],
            "trigger_id": photo, "session_hash": session, "event_data": None}
    urllib.request.urlopen(urllib.request.Request(url + "gradio_api/queue/join", data=json.dumps(body).encode(),
                                                  headers={"Content-Type": "application/json"}), timeout=10)
    with urllib.request.urlopen(url + f"gradio_api/queue/data?session_hash={session}", timeout=30) as stream:
        for line in stream:
            if line.startswith(b"data:") and json.loads(line[5:]).get("msg") == "process_completed":
                return json.loads(line[5:])
    raise AssertionError("no process_completed message")


def test_sessions_are_separate_and_their_photos_deleted(new_page, server, photos, tmp_path):
    from playwright.sync_api import expect

    first, second = new_page(), new_page()
    first.locator("#photo input[type=file]").set_input_files(str(photos["lesion"]))
    expect(first.locator("#status")).to_contain_text("Photo received", timeout=30_000)
    first.fill("#question textarea", QUESTION)
    first.click("#send")
    expect(first.locator("#status")).to_contain_text("Done.", timeout=60_000)
    expect(first.locator('#chat [data-testid="user"]')).to_contain_text(QUESTION)
    assert list(server.cache.glob("skingpt4-demo-*/sessions/*/*"))  # the first session's private copy
    # another user sees nothing of it; the same photo uploaded there is its own
    expect(second.locator('#chat [data-testid="user"]')).to_have_count(0)
    second.click("#send")
    expect(second.locator("#status")).to_contain_text("Please upload a photo of the skin first")
    not_an_image, empty = tmp_path / "private-notes.png", tmp_path / "private-empty.png"
    not_an_image.write_text("these are my notes, not a photo")
    empty.write_bytes(b"")
    second.locator("#photo input[type=file]").set_input_files(str(not_an_image))
    expect(second.locator("#status")).to_contain_text("This file is not an image", timeout=30_000)
    second.locator("#photo input[type=file]").set_input_files(str(empty))
    expect(second.locator("#status")).to_contain_text("This file is empty", timeout=30_000)
    second.locator("#photo input[type=file]").set_input_files(str(photos["lesion"]))
    expect(second.locator("#status")).to_contain_text("Photo received", timeout=30_000)
    # Restart in the first: its chat and its copy go, the second session's photo stays
    first.click("#restart")
    expect(first.locator('#chat [data-testid="user"]')).to_have_count(0)
    expect(first.locator("#differential")).not_to_contain_text("Differential")
    second.click("#clinical-2")
    expect(second.locator("#status")).to_contain_text("Done.", timeout=60_000)
    # crafted events naming a file that was never uploaded: one clear message
    for path in ("/etc/passwd", "../../../etc/passwd", "http://dns.google/x.png"):
        done = crafted_photo_event(server.url, path)
        assert done["success"] is False, path
        assert done["output"]["error"] == ("That file was not uploaded through this page, so it cannot be "
                                           "used. Please upload the photo again."), path
    first.context.close()
    second.context.close()
    deadline = time.monotonic() + 20
    while any(p.is_file() for p in server.cache.glob("skingpt4-demo-*/sessions/**/*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(p.is_file() for p in server.cache.glob("skingpt4-demo-*/sessions/**/*"))


def test_shutdown_leaves_nothing_and_the_log_holds_no_chat(server):
    """Runs last in this module: stops the server."""
    assert list(server.cache.glob("skingpt4-demo-*/uploads"))  # the app's own upload cache, while it runs
    assert server.stop() == 0
    assert server.files() == [], "uploads left after shutdown"
    assert not list(server.cache.glob("skingpt4-demo-*"))  # the app's folder is gone (Gradio's import leaves
    # an empty folder of its own there, vibe_edit_history, before the demo picks its cache)
    log = server.log_file.read_text()
    assert QUESTION not in log and "private-notes" not in log and "private-empty" not in log
    assert "Traceback" not in log and "InvalidPathError" not in log and "Cannot move" not in log
    assert "removed the demo's upload folder" in log
