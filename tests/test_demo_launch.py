"""The demo's privacy settings and upload clean-up, without a browser (tests/test_demo_browser.py drives one)."""
import logging
from pathlib import Path

import gradio as gr
import pytest

from skingpt4.demo import launch
from skingpt4.demo.uploads import UploadJanitor

CFG = str(Path(__file__).resolve().parents[1] / "eval_configs" / "skingpt4_tiny.yaml")


@pytest.fixture
def launched(monkeypatch, tiny_assets):
    """Run `demo.py`'s main with Blocks.launch replaced by a recorder."""
    calls = []

    def fake_launch(self, **kwargs):
        calls.append((self, kwargs))

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    return calls


def test_private_by_default(launched):
    assert launch.main(["--cfg-path", CFG, "--port", "7999"]) == 0
    demo, kwargs = launched[0]
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["server_port"] == 7999
    assert kwargs["share"] is False and kwargs["auth"] is None
    assert kwargs["run_history"] is False  # Gradio would otherwise keep past chats in the browser
    assert kwargs["enable_monitoring"] is False and kwargs["mcp_server"] is False
    assert kwargs["footer_links"] == []
    assert demo.analytics_enabled is False
    assert demo.delete_cache == (600, 3600)
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


def test_janitor_deletes_a_sessions_uploads_and_their_folders(tmp_path):
    cache = tmp_path / "cache"
    mine, theirs = cache / "aa11" / "photo.jpg", cache / "bb22" / "other.jpg"
    for path in (mine, theirs):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"jpeg")
    outside = tmp_path / "keep.jpg"
    outside.write_bytes(b"jpeg")
    janitor = UploadJanitor(cache)
    janitor.track("session-1", mine)
    janitor.track("session-1", outside)
    janitor.track("session-2", theirs)
    janitor.end_session("session-1")
    assert not mine.exists() and not mine.parent.exists()  # the per-file folder goes too
    assert outside.exists()  # never deletes outside Gradio's cache
    assert theirs.exists()  # another session's upload stays
    janitor.delete("session-2", theirs)
    assert list(cache.iterdir()) == []
    janitor.end_session("session-2")  # nothing left to do, no error
