"""The demo in a real browser (Debian chromium driven by playwright, headless): `python demo.py` with the tiny
model on CPU, on a free loopback port. One scenario, because starting the server takes most of the time."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What does this lesion look like?"
SECOND_QUESTION = "Is it dangerous?"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_server(subprocess_env, tmp_path):
    """`python demo.py` with the tiny model; yields (url, Gradio cache dir, log file)."""
    port, cache, log_file = free_port(), tmp_path / "gradio_cache", tmp_path / "demo.log"
    cache.mkdir()
    env = dict(subprocess_env, GRADIO_TEMP_DIR=str(cache))
    cmd = [sys.executable, "demo.py", "--cfg-path", "eval_configs/skingpt4_tiny.yaml", "--port", str(port),
           "--options", "run.decoding.max_new_tokens=48", "run.decoding.do_sample=false"]
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"demo.py exited with {proc.returncode}:\n{log_file.read_text()}")
            try:
                if urllib.request.urlopen(url, timeout=2).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"demo.py did not answer within 120 s:\n{log_file.read_text()}")
                time.sleep(0.5)
        yield url, cache, log_file
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def crafted_photo_event(url: str, path: str) -> dict:
    """POST a photo-upload event that names `path` (never uploaded: '/etc/passwd', '../x') straight to the
    queue, as a crafted client would, and return the completion message."""
    config = json.load(urllib.request.urlopen(url + "config", timeout=10))
    photo = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "photo")
    dep = next(d for d in config["dependencies"] if [photo, "input"] in [list(t) for t in d["targets"]])
    session = uuid.uuid4().hex[:10]
    body = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None], "fn_index": dep["id"],
            "trigger_id": photo, "session_hash": session, "event_data": None}
    urllib.request.urlopen(urllib.request.Request(url + "gradio_api/queue/join", data=json.dumps(body).encode(),
                                                  headers={"Content-Type": "application/json"}), timeout=10)
    with urllib.request.urlopen(url + f"gradio_api/queue/data?session_hash={session}", timeout=30) as stream:
        for line in stream:
            if line.startswith(b"data:") and json.loads(line[5:]).get("msg") == "process_completed":
                return json.loads(line[5:])
    raise AssertionError("no process_completed message")


def box(page, selector: str) -> dict:
    return page.locator(selector).bounding_box()


def check_phone_layout(browser, url: str, image: Path, screens: Path) -> Path:
    """At 390 px (a phone) the chat comes first and the status line, where errors appear, sits right under the
    question box, on the first screen: an error after Send is seen without scrolling."""
    from playwright.sync_api import expect

    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1).new_page()
    phone.goto(url)
    expect(phone.locator("#status")).to_contain_text("Model ready", timeout=30_000)
    phone.fill("#question textarea", QUESTION)
    phone.click("#send")
    expect(phone.locator("#status")).to_contain_text("Please upload a photo of the skin first")
    status, send, question = box(phone, "#status"), box(phone, "#send"), box(phone, "#question")
    assert 0 <= status["y"] and status["y"] + status["height"] <= 844, f"the error is off screen: {status}"
    assert question["y"] < send["y"] < status["y"] < send["y"] + send["height"] + 60  # right under the input
    chat, photo = box(phone, "#chat"), box(phone, "#photo")
    order = sorted(["#chat", "#question", "#status", "#photo", "#guideline", "#restart"],
                   key=lambda sel: box(phone, sel)["y"])
    assert order == ["#chat", "#question", "#status", "#photo", "#guideline", "#restart"], order
    assert chat["y"] < 844 / 2 and photo["y"] > status["y"]
    phone.locator("#photo input[type=file]").set_input_files(str(image))
    expect(phone.locator("#status")).to_contain_text("Photo received", timeout=30_000)
    phone.click("#send")
    expect(phone.locator("#status")).to_contain_text("Done.", timeout=60_000)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    phone.evaluate("window.scrollTo(0, 0)")
    shot = screens / "phone_390.png"
    phone.screenshot(path=str(shot))  # the first screen, as the phone shows it
    phone.screenshot(path=str(screens / "phone_390_full.png"), full_page=True)
    phone.context.close()
    return shot


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# Records every text the last bot message shows, to see the answer arrive in pieces.
WATCH_STREAM = """() => {
  window.__shown = [];
  new MutationObserver(() => {
    const bots = document.querySelectorAll('#chat [data-testid="bot"]');
    if (bots.length) window.__shown.push(bots[bots.length - 1].innerText);
  }).observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true});
}"""


def test_demo_in_a_real_browser(demo_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, cache, log_file = demo_server
    image = tmp_path / "lesion.png"
    from PIL import Image

    img = Image.new("RGB", (320, 240), (200, 140, 120))
    img.paste((110, 50, 40), (120, 90, 200, 160))
    img.save(image)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are my notes, not a photo")

    outside = []  # every request the pages make that does not go to the local server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            first = browser.new_context().new_page()
            first.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
            first.goto(url)
            expect(first.locator("#disclaimer")).to_contain_text("not a doctor")
            expect(first.locator("#disclaimer")).to_contain_text("emergency")
            expect(first.locator("#guideline")).to_contain_text("One lesion per photo")
            expect(first.locator("#status")).to_contain_text("Model ready", timeout=60_000)
            # which model answers, and that it is the tiny random one
            expect(first.locator("#model-info")).to_contain_text("Model: tiny (llm) · checkpoint projection.pth · "
                                                                 "projection ")
            expect(first.locator("#model-info")).to_contain_text("tiny synthetic-world model — not medical")
            expect(first.locator("#top-p")).to_contain_text("Top-p")
            # on the desktop the chat's title sits above the box, not over the first message
            title, chat = box(first, "#chat-title"), box(first, "#chat")
            assert title["y"] + title["height"] <= chat["y"] + 1

            # upload, ask, watch the answer stream in
            first.locator("#photo input[type=file]").set_input_files(str(image))
            expect(first.locator("#status")).to_contain_text("Photo received", timeout=30_000)
            first.evaluate(WATCH_STREAM)
            first.fill("#question textarea", QUESTION)
            first.click("#send")
            expect(first.locator("#status")).to_contain_text("Done.", timeout=60_000)
            bot = first.locator('#chat [data-testid="bot"]')
            expect(bot).to_have_count(1)
            answer = bot.last.inner_text()
            shown = [s for s in first.evaluate("window.__shown") if s.strip() and s.strip() != "…"]
            assert len(set(shown)) >= 3, f"the answer did not arrive in pieces: {shown}"
            assert shown[-1] == answer and answer.strip()
            expect(first.locator('#chat [data-testid="user"]')).to_contain_text(QUESTION)
            # the photo's differential: the three likeliest classes with probabilities, under the disclaimer
            differential = first.locator("#differential")
            expect(differential).to_contain_text("Differential", timeout=30_000)
            expect(differential).to_contain_text("3. ")
            assert "%" in differential.inner_text() and "not calibrated" in differential.inner_text()
            expect(differential).to_contain_text("see a dermatologist")  # uncalibrated, near uniform: it abstains
            assert box(first, "#disclaimer")["y"] < box(first, "#differential")["y"]
            screenshot = tmp_path / "screens" / "chat.png"
            first.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
            bubble = box(first, '#chat [data-testid="user"]')
            assert bubble["y"] >= title["y"] + title["height"]  # the top message is not covered
            assert any(p.name == image.name for p in files_under(cache))  # the upload sits in Gradio's cache

            # a second browser (another user) sees nothing of the first conversation
            second = browser.new_context().new_page()
            second.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
            second.goto(url)
            expect(second.locator("#status")).to_contain_text("Model ready", timeout=30_000)
            expect(second.locator('#chat [data-testid="user"]')).to_have_count(0)
            second.fill("#question textarea", QUESTION)
            second.click("#send")
            expect(second.locator("#status")).to_contain_text("Please upload a photo of the skin first")
            second.locator("#photo input[type=file]").set_input_files(str(not_an_image))
            expect(second.locator("#status")).to_contain_text("This file is not an image", timeout=30_000)
            expect(second.locator('#chat [data-testid="bot"]')).to_have_count(0)

            # the first conversation goes on, then Restart clears it and deletes the photo at once
            first.click("#send")  # an empty message
            expect(first.locator("#status")).to_contain_text("Please type a question about the image.")
            first.click("#clinical-3")
            expect(first.locator('#chat [data-testid="bot"]')).to_have_count(2, timeout=60_000)
            expect(first.locator("#status")).to_contain_text("Done.", timeout=60_000)
            first.click("#restart")
            expect(first.locator('#chat [data-testid="user"]')).to_have_count(0)
            expect(first.locator("#status")).to_contain_text("Upload a photo")
            expect(first.locator("#differential")).not_to_contain_text("Differential")  # gone with the photo
            deadline = time.monotonic() + 10
            while any(p.name == image.name for p in files_under(cache)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(p.name == image.name for p in files_under(cache))

            # a phone (390 px): chat first, errors next to the input; the screenshot is kept for a look
            phone_shot = check_phone_layout(browser, url, image, tmp_path / "screens")
            assert phone_shot.stat().st_size > 10_000
            if os.environ.get("SKINGPT4_SCREENSHOTS"):
                for png in (tmp_path / "screens").glob("*.png"):
                    shutil.copy(png, Path(os.environ["SKINGPT4_SCREENSHOTS"]) / png.name)

            # a crafted event naming a file outside Gradio's cache gets a clear error, not {"error": null}
            for path in ("/etc/passwd", "../../../etc/passwd"):
                done = crafted_photo_event(url, path)
                assert done["success"] is False
                assert done["output"]["error"] == ("That file was not uploaded through this page, so it cannot be "
                                                   "used. Please upload the photo again.")

            # upload again, then end both sessions by closing the tabs: nothing uploaded stays on disk
            first.locator("#photo input[type=file]").set_input_files(str(image))
            expect(first.locator("#status")).to_contain_text("Photo received", timeout=30_000)
            first.context.close()
            second.context.close()
        finally:
            browser.close()

    deadline = time.monotonic() + 20
    while files_under(cache) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert files_under(cache) == [], "uploads left in Gradio's cache after the sessions ended"
    assert outside == [], f"the page reached outside the machine: {outside}"
    server_log = log_file.read_text()
    assert QUESTION not in server_log and answer.strip()[:20] not in server_log  # no chat logging
    assert "InvalidPathError" not in server_log and "Cannot move" not in server_log  # no traceback for those
    assert server_log.count("refused a request naming a file that was not uploaded through this page") == 2
