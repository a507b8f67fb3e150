"""The demo's privacy settings and upload clean-up, without a browser (tests/test_demo_browser.py drives one)."""
import logging
import time
from pathlib import Path

import gradio as gr
import pytest

from skingpt4.demo import launch

CFG = str(Path(__file__).resolve().parents[1] / "eval_configs" / "skingpt4_tiny.yaml")


@pytest.fixture
def launched(monkeypatch, tiny_assets):
    """Run `demo.py`'s main with Blocks.launch replaced by a recorder and no model loading."""
    calls = []

    def fake_launch(self, **kwargs):
        calls.append((self, kwargs))

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    monkeypatch.setattr(launch.ModelLoader, "start", lambda self: self)  # no model needed here
    return calls


def test_private_by_default(launched):
    import signal

    on_sigterm = signal.getsignal(signal.SIGTERM)
    assert launch.main(["--cfg-path", CFG, "--port", "7999"]) == 0
    assert signal.getsignal(signal.SIGTERM) == on_sigterm  # put back once the server stopped
    demo, kwargs = launched[0]
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["server_port"] == 7999
    assert kwargs["share"] is False and kwargs["auth"] is None
    assert kwargs["run_history"] is False  # Gradio would otherwise keep past chats in the browser
    assert kwargs["enable_monitoring"] is False and kwargs["mcp_server"] is False
    assert kwargs["footer_links"] == []
    assert demo.analytics_enabled is False
    assert demo.delete_cache == (600, 3600)
    # the app's own upload folder (Gradio's cache for this process only), removed when the server stopped
    assert kwargs["blocked_paths"] and kwargs["blocked_paths"][0].endswith("sessions")
    assert not Path(kwargs["blocked_paths"][0]).parent.exists()
    # system fonts only: the default theme loads Google Fonts from the internet
    assert "fonts.googleapis" not in kwargs["theme"]._get_theme_css()


def test_share_warns_and_auth_is_passed(launched, caplog):
    with caplog.at_level(logging.WARNING, logger="skingpt4.demo"):
        assert launch.main(["--cfg-path", CFG, "--share", "--auth", "ann:s3cret:x"]) == 0
    assert launched[0][1]["share"] is True and launched[0][1]["auth"] == ("ann", "s3cret:x")
    assert "a PUBLIC link will be created" in caplog.text


def test_bad_arguments_stop_before_the_server_starts(launched, capsys, tmp_path):
    assert launch.main(["--cfg-path", CFG, "--auth", "nopassword"]) == 2
    assert "--auth takes USER:PASS, both non-empty" in capsys.readouterr().err
    assert launch.main(["--cfg-path", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert launch.main(["--cfg-path", CFG, "--options", "run.decoding.num_beams=0"]) == 2
    assert "num_beams must be >= 1, got 0" in capsys.readouterr().err
    assert launched == []


def test_loading_progress_and_failure_are_shown():
    import threading

    from skingpt4.common.config import ConfigError
    from skingpt4.demo.loading import ModelLoader

    release, engine = threading.Event(), object()

    def slow_build():
        logging.getLogger("skingpt4.model").info("loaded vision encoder from 'eva_vit_g.pth'")
        release.wait(10)
        return engine

    logging.getLogger("skingpt4").setLevel(logging.INFO)
    loader = ModelLoader(slow_build).start()
    deadline = time.monotonic() + 5
    while "1 step(s) done" not in loader.status() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loader.status().startswith("**Loading the model…")
    assert "1 step(s) done; last: loaded vision encoder from 'eva_vit_g.pth'" in loader.status()
    assert loader.engine is None and not loader.done
    release.set()
    while not loader.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loader.engine is engine and loader.status().startswith("Model ready")

    def broken_build():
        raise ConfigError("config key 'model.llm_model': no such directory '/x'")

    failed = ModelLoader(broken_build).start()
    while not failed.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert failed.status() == ("**Loading the model failed** (ConfigError: config key 'model.llm_model': no such "
                               "directory '/x'). Fix the config and restart the demo.")
