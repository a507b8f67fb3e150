"""The serving client (`python -m skingpt4.chat.remote`) against a fake local server that speaks vLLM's OpenAI API
with vLLM's BLIP-2 prompt placement (tests/fake_openai_server.py): the same JSON as the local CLI, the photo and the
earlier turns in every request, one-line errors."""
import io
import json

import pytest
from PIL import Image

from fake_openai_server import FakeVLLM
from skingpt4.chat.cli import main as local_main
from skingpt4.chat.remote import main as remote_main
from skingpt4.prompting import CLINICAL_PROMPTS

CFG = "eval_configs/skingpt4_tiny.yaml"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "lesion.jpg"
    image = Image.new("RGB", (96, 80), (236, 192, 158))
    image.paste((200, 30, 30), (30, 20, 60, 55))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def server(tiny_export):
    fake = FakeVLLM(tiny_export)
    http, url = fake.serve()
    yield fake, url
    http.shutdown()
    http.server_close()


def run(main, argv) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def test_remote_prints_the_local_cli_json(server, photo, tiny_assets):
    fake, url = server
    code, text = run(remote_main, ["--url", url, "--export-dir", str(fake.export_dir), "--image", str(photo),
                                   "--clinical", "--greedy", "--max-new-tokens", "12", "--format", "json"])
    assert code == 0
    remote = json.loads(text)
    code, text = run(local_main, ["--cfg-path", CFG, "--image", str(photo), "--clinical", "--greedy",
                                  "--max-new-tokens", "12", "--format", "json"])
    assert code == 0
    local = json.loads(text)
    # the local record, less the calibrated differential (not available through the chat API), plus who served it
    differential = {"differential", "abstained", "temperature", "abstain_below", "calibration_file", "message"}
    assert set(remote) == set(local) - differential | {"server", "served_model"}
    for key in ("variant", "llm_model", "checkpoint_sha256", "projection_sha256", "model_config_sha256",
                "image_sha256", "chat_template", "note"):
        assert remote[key] == local[key], key
    assert remote["server"] == url and remote["served_model"] == "skingpt4"
    local["decoding"].pop("max_length"), remote["decoding"].pop("max_length")  # the tiny config caps it at 1000
    assert remote["decoding"] == local["decoding"]
    assert remote["template"] == local["template"] == "vicuna_v0"
    assert [a["question"] for a in remote["answers"]] == list(CLINICAL_PROMPTS)
    for answer, theirs in zip(remote["answers"], local["answers"]):
        assert answer.keys() == theirs.keys()
        assert answer["stopped_by"] in ("stop_string", "eos", "max_new_tokens") and 0 < answer["new_tokens"] <= 12
    # what went over the wire: the photo in the first user message, the history growing, greedy, stop strings
    sent = fake.requests[-4:]
    assert [len(r["messages"]) for r in sent] == [1, 3, 5, 7]
    first = sent[-1]["messages"][0]["content"]
    assert first[0]["type"] == "image_url" and first[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert sent[-1]["messages"][1] == {"role": "assistant", "content": remote["answers"][0]["answer"]}
    assert all(r["temperature"] == 0.0 and r["stop"] == ["###"] and r["add_special_tokens"] is False for r in sent)


def test_remote_errors_are_one_line(photo, server, capsys):
    _, url = server
    code, _ = run(remote_main, ["--url", "http://127.0.0.1:9/v1", "--image", str(photo), "--greedy"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the server" in err and len(err.strip().splitlines()) == 1
    code, _ = run(remote_main, ["--url", "127.0.0.1:8000", "--image", str(photo), "--greedy"])
    err = capsys.readouterr().err
    assert code == 2 and "give the server's API base" in err and len(err.strip().splitlines()) == 1
    code, _ = run(remote_main, ["--url", url, "--model", "other", "--image", str(photo), "--greedy"])
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 404" in err and len(err.strip().splitlines()) == 1
    code, _ = run(remote_main, ["--url", url, "--image", str(photo.parent / "missing.jpg")])
    assert code == 2 and "cannot use the image" in capsys.readouterr().err
    code, _ = run(remote_main, ["--url", url, "--export-dir", str(photo.parent), "--image", str(photo)])
    assert code == 2 and "is not a SkinGPT-4 export" in capsys.readouterr().err


def test_remote_markdown_without_export_dir(server, photo):
    _, url = server
    code, text = run(remote_main, ["--url", url, "--image", str(photo), "--ask", "What's wrong with my skin?",
                                   "--max-new-tokens", "6", "--seed", "3", "--format", "markdown"])
    assert code == 0 and "## 1. What's wrong with my skin?" in text and "seed 3" in text
