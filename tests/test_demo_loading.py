"""The demo's model loader: a config that cannot load is one line in the terminal (no traceback) as on the
page, an unexpected failure keeps its traceback, and a loaded model says which it is."""
import logging
import time

from skingpt4.chat import ChatEngine
from skingpt4.common.config import ConfigError
from skingpt4.demo.loading import ModelLoader


def finished(loader: ModelLoader) -> ModelLoader:
    deadline = time.monotonic() + 30
    while not loader.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loader.done
    return loader


def test_a_config_that_cannot_load_is_one_line_in_the_terminal(capsys, caplog):
    def no_gpu():
        raise ConfigError("model.device=cuda but no CUDA GPU is available; use device: cpu (or auto)")

    with caplog.at_level(logging.INFO, logger="skingpt4"):
        loader = finished(ModelLoader(no_gpu).start())
    reason = "ConfigError: model.device=cuda but no CUDA GPU is available; use device: cpu (or auto)"
    assert capsys.readouterr().err == f"error: loading the model failed: {reason}\n"
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)
    assert loader.status() == f"**Loading the model failed** ({reason}). Fix the config and restart the demo."


def test_an_unexpected_failure_keeps_its_traceback_and_one_line(capsys, caplog):
    def bug():
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    with caplog.at_level(logging.INFO, logger="skingpt4"):
        finished(ModelLoader(bug).start())
    assert capsys.readouterr().err == ("error: loading the model failed: RuntimeError: CUDA out of memory. Tried to "
                                       "allocate 2 GiB\n")
    assert any(r.exc_info for r in caplog.records)  # a bug report needs the traceback


def test_the_loaded_model_says_which_it_is(tiny_model):
    loader = finished(ModelLoader(lambda: ChatEngine(tiny_model)).start())
    assert loader.model_line.startswith("Model: tiny (llm) · checkpoint none (random projection) · projection ")
    assert loader.model_line.endswith("· ⚠️ tiny synthetic-world model — not medical")
