"""The chat CLI as a user meets it: a broken model.ckpt is a one-line error with exit status 2, every path
problem of a config is listed at once, the JSON says which model answered and reproduces sampled answers,
and control characters never reach a reply."""
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from skingpt4.chat import ChatEngine
from skingpt4.chat.cli import main
from skingpt4.prompting.templates import VICUNA_V0

CFG = str(Path(__file__).resolve().parents[1] / "eval_configs" / "skingpt4_tiny.yaml")


@pytest.fixture
def photo(tmp_path) -> str:
    path = tmp_path / "lesion.png"
    Image.new("RGB", (64, 48), (200, 140, 120)).save(path)
    return str(path)


def run(argv):
    out = io.StringIO()
    return main(argv, stdin=io.StringIO(""), out=out), out.getvalue()


def last_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_empty_or_cut_model_ckpt_is_one_line_exit_2(tiny_assets, photo, tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert run(["--cfg-path", CFG, "--image", photo, "--clinical", "--options", f"model.ckpt={empty}"])[0] == 2
    assert last_error_line(capsys.readouterr().err) == (
        f"error: config key 'model.ckpt': checkpoint '{empty}' is empty (0 bytes); was it written completely?")
    cut = tmp_path / "cut.pth"
    data = (tiny_assets / "projection.pth").read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert run(["--cfg-path", CFG, "--image", photo, "--clinical", "--options", f"model.ckpt={cut}"])[0] == 2
    assert last_error_line(capsys.readouterr().err).startswith(
        f"error: config key 'model.ckpt': checkpoint '{cut}' is damaged or cut short")


def test_every_missing_path_is_listed_at_once(tiny_assets, photo, tmp_path, capsys):
    options = [f"model.ckpt={tmp_path / 'no.pth'}", f"model.llm_model={tmp_path / 'no_llm'}",
               f"model.vit_model={tmp_path / 'no_vit.pth'}"]
    assert run(["--cfg-path", CFG, "--image", photo, "--clinical", "--options", *options])[0] == 2
    line = last_error_line(capsys.readouterr().err)
    assert line.startswith("error: 3 paths in the config need fixing: (1) config key 'model.vit_model': no such "
                           f"file '{tmp_path / 'no_vit.pth'}'")
    assert f"(2) config key 'model.llm_model': no such directory '{tmp_path / 'no_llm'}'" in line
    assert f"(3) config key 'model.ckpt': no such file '{tmp_path / 'no.pth'}'" in line


def test_json_records_provenance_and_a_drawn_seed(tiny_assets, photo):
    argv = ["--cfg-path", CFG, "--image", photo, "--ask", "What is it?", "--format", "json", "--max-new-tokens", "6",
            "--options", "run.decoding.do_sample=true"]  # the tiny config decodes greedily
    code, out = run(argv)
    assert code == 0
    record = json.loads(out)
    assert record["decoding"]["do_sample"] is True and isinstance(record["decoding"]["seed"], int)
    for key in ("config_sha256", "model_config_sha256", "checkpoint_sha256", "projection_sha256", "image_sha256"):
        assert len(record[key]) == 64, key
    assert record["variant"] == "tiny" and record["note"] == "tiny synthetic-world model — not medical"
    assert record["checkpoint"].endswith("projection.pth") and record["skingpt4_version"]
    assert record["created_utc"].endswith("+00:00")
    # the recorded seed reproduces the sampled answer
    again = json.loads(run(argv + ["--seed", str(record["decoding"]["seed"])])[1])
    assert again["answers"][0]["answer"] == record["answers"][0]["answer"]
    assert again["decoding"] == record["decoding"]


def test_control_characters_are_removed_from_replies(tiny_model, monkeypatch):
    assert VICUNA_V0.clean_reply("cut inside a character \ufffd\ufffd") == "cut inside a character"
    assert VICUNA_V0.clean_reply(" It is\x07 acne\x00.\r\nSee\ta doctor\x1b.\x85###Human: x") == (
        "It is acne.\nSee\ta doctor.")
    engine = ChatEngine(tiny_model)
    monkeypatch.setattr(engine, "_decode", lambda ids: "Looks\x0b like\x01 eczema\x7f.")
    conv = engine.new_conversation(torch.zeros(3, 224, 224))
    from skingpt4.chat.decoding import DecodingConfig

    assert engine.ask(conv, "What is it?", DecodingConfig(do_sample=False, max_new_tokens=3)) == "Looks like eczema."
    assert [t for t in engine.ask_stream(conv, "And?", DecodingConfig(do_sample=False, max_new_tokens=3))][-1] == (
        "Looks like eczema.")
