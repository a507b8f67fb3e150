"""`python -m skingpt4.chat`: one-shot clinical answers (JSON, Markdown), the interactive loop, bad input."""
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from skingpt4.chat.cli import main
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

CFG = str(Path(__file__).resolve().parents[1] / "eval_configs" / "skingpt4_tiny.yaml")


@pytest.fixture
def photo(tmp_path) -> str:
    path = tmp_path / "lesion.jpg"
    img = Image.new("RGB", (300, 200), (200, 140, 120))
    img.paste((110, 50, 40), (120, 80, 190, 140))
    img.save(path)
    return str(path)


def run(argv, stdin=""):
    out = io.StringIO()
    code = main(argv, stdin=io.StringIO(stdin), out=out)
    return code, out.getvalue()


def test_clinical_questions_as_json(tiny_assets, photo):
    torch.manual_seed(0)  # the tiny config has no projection checkpoint: its projection is drawn at build time
    code, out = run(["--cfg-path", CFG, "--image", photo, "--clinical", "--format", "json", "--greedy",
                     "--max-new-tokens", "6"])
    assert code == 0
    record = json.loads(out)
    assert [a["question"] for a in record["answers"]] == list(CLINICAL_PROMPTS)
    assert all(a["new_tokens"] <= 6 and a["stopped_by"] for a in record["answers"])
    assert record["decoding"]["do_sample"] is False and record["template"] == "vicuna_v0"
    assert "not a doctor" in record["disclaimer"]
    # the differential: every class once, probabilities summing to 1, most likely first; uncalibrated here
    ranked = record["differential"]
    assert len(ranked) == 16 and len({d["class"] for d in ranked}) == 16
    assert abs(sum(d["probability"] for d in ranked) - 1) < 1e-5
    assert [d["probability"] for d in ranked] == sorted((d["probability"] for d in ranked), reverse=True)
    assert record["temperature"] == 1.0 and record["calibration_file"] is None
    # uncalibrated: labelled so, and it always abstains, whatever the top probability
    assert record["calibrated"] is False and record["abstained"] is True
    assert record["abstain_reason"] == "uncalibrated" and "not calibrated" in record["message"]
    # greedy: the same answers again
    torch.manual_seed(0)
    assert json.loads(run(["--cfg-path", CFG, "--image", photo, "--clinical", "--format", "json", "--greedy",
                           "--max-new-tokens", "6"])[1])["answers"][0]["answer"] == record["answers"][0]["answer"]


def test_questions_as_markdown(tiny_assets, photo):
    code, out = run(["--cfg-path", CFG, "--image", photo, "--ask", "Is it acne?", "--ask", "Why?", "--seed", "1",
                     "--max-new-tokens", "4"])
    assert code == 0
    assert out.startswith(f"# SkinGPT-4 answers for `{photo}`")
    assert "## 1. Is it acne?" in out and "## 2. Why?" in out and "> SkinGPT-4 is not a doctor." in out


def test_interactive_session(tiny_assets, photo, tmp_path):
    (tmp_path / "notes.txt").write_text("no image")
    script = f"What is it?\n\n/image {tmp_path / 'notes.txt'}\n/reset\nAnd now?\n/quit\n"
    code, out = run(["--cfg-path", CFG, "--image", photo, "--greedy", "--max-new-tokens", "5"], stdin=script)
    assert code == 0
    assert out.count("SkinGPT-4: ") == 2
    assert "Please type a question about the image." in out
    assert "Cannot use that image (not_an_image)" in out and "The previous photo is kept." in out
    assert "(new conversation about the same photo)" in out


def test_bad_image_and_bad_config_are_clear_errors(tiny_assets, photo, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no image")
    assert run(["--cfg-path", CFG, "--image", str(tmp_path / "notes.txt"), "--clinical"])[0] == 2
    assert "cannot use the image" in capsys.readouterr().err
    assert run(["--cfg-path", CFG, "--image", photo, "--clinical", "--options", "run.max_question_char=x"])[0] == 2
    assert "unknown key 'run.max_question_char' (did you mean 'max_question_chars'?)" in capsys.readouterr().err
    assert run(["--cfg-path", CFG, "--image", photo, "--clinical", "--top-p", "1.5"])[0] == 2
    assert "top_p must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert run(["--cfg-path", CFG, "--image", photo, "--options", "model.template=llama3"])[0] == 2
    assert "unknown model.template 'llama3'; did you mean 'llama3_chat'" in capsys.readouterr().err


def test_sampling_flags_on_a_greedy_config_switch_sampling_on_and_record_it(tiny_assets, photo, capsys):
    args = ["--cfg-path", CFG, "--image", photo, "--ask", "Is it acne?", "--format", "json", "--max-new-tokens", "8"]
    code, out = run(args + ["--temperature", "1.5", "--seed", "3"])  # the tiny config decodes greedily
    assert code == 0
    decoding = json.loads(out)["decoding"]
    assert decoding["do_sample"] is True and decoding["temperature"] == 1.5 and decoding["seed"] == 3
    assert "sampling switched on by --temperature, --seed" in capsys.readouterr().err
    again = json.loads(run(args + ["--temperature", "1.5", "--seed", "3"])[1])["answers"]
    assert [a["answer"] for a in again] == [a["answer"] for a in json.loads(out)["answers"]]  # the seed repeats it
    assert json.loads(run(args + ["--seed", "4"])[1])["decoding"]["do_sample"] is True
    capsys.readouterr()
    for extra, flags, mode in ((["--greedy", "--top-p", "0.5"], "--top-p", "--greedy"),
                               (["--num-beams", "2", "--seed", "1"], "--seed", "--num-beams")):
        assert run(args + extra)[0] == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flags} set(s) sampling, but {mode} asks for deterministic") and \
            err.count("\n") == 1, err


def test_a_seed_beyond_int64_is_one_line_before_the_model_loads(tiny_assets, photo, capsys):
    for seed in (str(2**63), "-1", str(10**30)):
        assert run(["--cfg-path", CFG, "--image", photo, "--clinical", "--seed", seed])[0] == 2
        err = capsys.readouterr().err
        assert err == f"error: --seed must be an integer in [0, 2^63 - 1], got {seed}\n", err


def test_slash_commands_are_never_sent_to_the_model(tiny_assets, photo):
    script = "/help\n/HELP\n/frobnicate now\n/image\n/differential\n//help me\n/exit\nnot reached\n"
    code, out = run(["--cfg-path", CFG, "--image", photo, "--greedy", "--max-new-tokens", "4"], stdin=script)
    assert code == 0
    assert out.count("Commands (a line starting with / is never sent to the model") == 2
    assert "Unknown command /frobnicate; /help lists the commands (nothing was sent to the model)." in out
    assert "Usage: /image PATH" in out
    assert "## Differential (likelihood of each class's answer; not calibrated)" in out and "not calibrated" in out
    assert out.count("SkinGPT-4: ") == 1  # only "//help me", asked as "/help me"


def test_a_null_checkpoint_needs_an_explicit_override(tiny_assets, photo, capsys):
    args = ["--cfg-path", CFG, "--image", photo, "--ask", "Is it acne?", "--greedy", "--max-new-tokens", "3"]
    assert run(args + ["--options", "model.ckpt=null"])[0] == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.ckpt is null: the projection would be drawn at random") and \
        err.count("\n") == 1 and "run.untrained_projection=true" in err
    assert run(args + ["--options", "model.ckpt=null", "run.untrained_projection=true"])[0] == 0
