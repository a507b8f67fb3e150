"""The exact serving path (docs/scaling.md, "Serving with vLLM"): `python -m skingpt4.export --target vllm`, the
client (`RemoteChatEngine`, `python -m skingpt4.chat.remote`) and a fake vLLM that runs the exported LLM with
transformers on the prompt embeddings it receives (tests/fake_openai_server.py). The tensor on the wire is the
local engine's `inputs_embeds`, and the served greedy tokens are the local ones."""
import base64
import io
import json

import pytest
import torch
from PIL import Image

from fake_openai_server import FakePromptEmbedsServer
from skingpt4.chat import ChatEngine, DecodingConfig
from skingpt4.chat.build import read_chat_config
from skingpt4.chat.cli import main as local_main
from skingpt4.chat.remote import main as remote_main
from skingpt4.chat.remote_engine import RemoteChatEngine, load_client_model
from skingpt4.export.cli import main as export_main
from skingpt4.models import build_model
from skingpt4.prompting import CLINICAL_PROMPTS

CFG = "eval_configs/skingpt4_tiny.yaml"
GREEDY = DecodingConfig(do_sample=False, max_new_tokens=16)


def export_for_vllm(out, *options) -> None:
    argv = ["--cfg-path", CFG, "--target", "vllm", "--out", str(out)] + (["--options", *options] if options else [])
    assert export_main(argv) == 0


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "lesion.jpg"
    image = Image.new("RGB", (96, 80), (236, 192, 158))
    image.paste((200, 30, 30), (30, 20, 60, 55))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def exports(tiny_assets, tmp_path_factory):
    """The tiny chat model exported for vLLM with each of two chat templates."""
    root = tmp_path_factory.mktemp("vllm_exports")
    export_for_vllm(root / "vicuna_v0")
    export_for_vllm(root / "llama2_chat", "model.template=llama2_chat")
    return root


@pytest.fixture(scope="module")
def served(exports):
    fake = FakePromptEmbedsServer(exports / "vicuna_v0")
    http, url = fake.serve()
    yield fake, url
    http.shutdown()
    http.server_close()


def chat_model(*options):
    """The model the export was made from (the tiny chat config), built locally."""
    cfg, _ = read_chat_config(CFG, options)
    return build_model(cfg.model)


def run(main, argv) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def decode_sent(body: dict) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(body["prompt_embeds"])), weights_only=True)


@pytest.mark.parametrize("template", ["vicuna_v0", "llama2_chat"])
def test_sent_embeddings_are_the_local_inputs_embeds(exports, photo, template):
    """Turn 1 and turn 3: what the client would send (decoded from the request body) equals the local model's
    own `inputs_embeds` of the project's layout, bit for bit."""
    local = chat_model("model.template=" + template)
    client, info = load_client_model(exports / template, "cpu")
    assert info["template"] == template and client.template.name == template
    engine = RemoteChatEngine(client, info, "http://127.0.0.1:9/v1")
    conv = engine.new_conversation(str(photo))
    local_conv = ChatEngine(local).new_conversation(str(photo))
    assert torch.equal(conv.image_embeds, local_conv.image_embeds)
    history = [(CLINICAL_PROMPTS[0], "A red plaque."), (CLINICAL_PROMPTS[1], "It is psoriasis.")]
    for turn, past in ((1, []), (3, history)):
        conv.history = list(past)
        prepared = engine._prepare(conv, CLINICAL_PROMPTS[turn - 1], GREEDY, use_cache=False)
        layout = local.layout(past, CLINICAL_PROMPTS[turn - 1])
        assert prepared.tokens == layout.tokens  # the project's layout: image mid-prompt, where the template puts it
        expected, _ = local.embed([layout.tokens], local_conv.image_embeds)
        sent = decode_sent(engine.request_body(prepared))
        assert sent.shape == expected[0].shape and torch.equal(sent, expected[0]), (template, turn)
        image_at = layout.image_positions
        assert image_at[0] > 1 and torch.equal(sent[image_at], local_conv.image_embeds[0])


def test_served_greedy_tokens_equal_the_local_engine(served, photo, tiny_assets):
    """Four clinical turns, greedy: the fake server (transformers on the received embeddings) generates exactly the
    local ChatEngine's token ids, and the client's replies and turn reports are the local ones."""
    fake, url = served
    export_dir = fake.export_dir
    local = ChatEngine(chat_model())
    remote = RemoteChatEngine.from_export(export_dir, url, device="cpu")
    local_conv, remote_conv = local.new_conversation(str(photo)), remote.new_conversation(str(photo))
    before = len(fake.generated)
    for question in CLINICAL_PROMPTS:
        assert remote.ask(remote_conv, question, GREEDY) == local.ask(local_conv, question, GREEDY)
        assert remote_conv.last_turn.reply_ids == local_conv.last_turn.reply_ids
        assert remote_conv.last_turn.stopped_by == local_conv.last_turn.stopped_by
        assert fake.generated[-1] == local_conv.last_turn.reply_ids
    assert len(fake.generated) - before == 4
    sent = fake.requests[-1]
    assert sent["model"] == remote.served_model and sent["temperature"] == 0.0 and sent["stop"] == ["###"]
    assert decode_sent(sent).shape[0] == len(local.model.layout(local_conv.history[:3], CLINICAL_PROMPTS[3]).tokens)
    # a batch of conversations goes out as concurrent requests and gives the same replies
    convs = [remote.new_conversation(str(photo)) for _ in range(3)]
    assert remote.ask_batch(convs, [CLINICAL_PROMPTS[0]] * 3, GREEDY) == [local_conv.history[0][1]] * 3


def test_remote_cli_prints_the_local_cli_json(served, photo, tiny_assets):
    fake, url = served
    code, text = run(remote_main, ["--server", url, "--export-dir", str(fake.export_dir), "--image", str(photo),
                                   "--clinical", "--greedy", "--max-new-tokens", "12"])
    assert code == 0
    remote = json.loads(text)
    code, text = run(local_main, ["--cfg-path", CFG, "--image", str(photo), "--clinical", "--greedy",
                                  "--max-new-tokens", "12", "--format", "json"])
    assert code == 0
    local = json.loads(text)
    assert [a["answer"] for a in remote["answers"]] == [a["answer"] for a in local["answers"]]
    for answer, theirs in zip(remote["answers"], local["answers"]):
        assert answer.keys() == theirs.keys()
        assert (answer["new_tokens"], answer["stopped_by"]) == (theirs["new_tokens"], theirs["stopped_by"])
    # the local record, the differential said to be not served, plus who served it
    differential = {"abstained", "abstain_reason", "calibrated", "ood", "temperature", "abstain_below",
                    "calibration_file", "message"}
    assert set(remote) == set(local) - differential | {"server", "served_model", "differential_note"}
    assert remote["differential"] is None and "prompt logprobs" in remote["differential_note"]
    for key in ("variant", "llm_model", "projection_sha256", "model_config_sha256", "chat_template", "note"):
        assert remote[key] == local[key], key
    assert remote["served_model"] == fake.name and remote["server"] == url
    # --url stays an alias of --server; markdown too
    code, text = run(remote_main, ["--url", url, "--export-dir", str(fake.export_dir), "--image", str(photo),
                                   "--ask", "What's wrong with my skin?", "--max-new-tokens", "6", "--seed", "3",
                                   "--format", "markdown"])
    assert code == 0 and "## 1. What's wrong with my skin?" in text and "seed 3" in text


def test_remote_cli_errors_are_one_line(served, photo, exports, tmp_path, capsys):
    fake, url = served
    export_dir = str(fake.export_dir)

    def error(argv, expected):
        code, _ = run(remote_main, argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err

    error(["--server", "http://127.0.0.1:9/v1", "--export-dir", export_dir, "--image", str(photo), "--greedy"],
          "cannot reach the server")
    error(["--server", "127.0.0.1:8000", "--export-dir", export_dir, "--image", str(photo)], "give the server's API")
    # a server that serves another model (here: the export with the other template)
    error(["--server", url, "--export-dir", str(exports / "llama2_chat"), "--image", str(photo), "--greedy"],
          "not this export")
    error(["--server", url, "--export-dir", export_dir, "--image", str(photo.parent / "missing.jpg")],
          "cannot use the image")
    error(["--server", url, "--export-dir", str(photo.parent), "--image", str(photo)], "is not a SkinGPT-4 export")
    error(["--server", url, "--export-dir", export_dir, "--image", str(huge_png(tmp_path)), "--greedy"],
          "cannot use the image")
    error(["--server", url, "--export-dir", export_dir, "--image", str(photo), "--timeout", "0"], "--timeout")
    # a torn client file, a manifest of the other target
    import shutil

    torn = tmp_path / "torn"
    shutil.copytree(export_dir, torn)
    client_file = torn / "skingpt4_client.safetensors"
    client_file.write_bytes(client_file.read_bytes()[:1000])
    error(["--server", url, "--export-dir", str(torn), "--image", str(photo)], "cannot read skingpt4_client")
    other = json.loads((torn / "skingpt4_export.json").read_text())
    other["target"] = "blip2"
    (torn / "skingpt4_export.json").write_text(json.dumps(other))
    error(["--server", url, "--export-dir", str(torn), "--image", str(photo)], "is not a --target vllm export")


def huge_png(folder):
    """A PNG whose header says 20000 x 20000 pixels (over the loader's limit, refused before decoding)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = folder / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def test_export_refusals_come_before_the_build(tiny_assets, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "export", "/proc/skingpt4-export"):
        assert export_main(["--cfg-path", CFG, "--target", "vllm", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --out") and len(err.splitlines()) == 1 and "skingpt4.model" not in err
    # NaN weights are not exported
    ckpt = tmp_path / "nan.pth"
    model = build_model({"variant": "tiny", "ckpt": None})
    torch.save({"model": {k: torch.full_like(v, float("nan")) for k, v in model.trainable_state_dict().items()}},
               ckpt)
    for target in ("vllm", "blip2"):
        out = tmp_path / f"nan_export_{target}"
        assert export_main(["--cfg-path", CFG, "--target", target, "--out", str(out), "--options",
                            f"model.ckpt={ckpt}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        # refused as the checkpoint is read (models/loading.py), or by the export's own check of every weight
        assert err.startswith("error: ") and "non-finite" in err and "'llama_proj." in err, err
        assert not out.exists()  # nothing written, not even the empty directory


def test_export_writes_what_vllm_reads(exports):
    info = json.loads((exports / "vicuna_v0" / "skingpt4_export.json").read_text())
    config = json.loads((exports / "vicuna_v0" / "llm" / "config.json").read_text())
    # transformers 4.x (vLLM's pin) reads torch_dtype and rope_theta; 5.x writes dtype and rope_parameters
    assert config["torch_dtype"] == "float32" and config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert info["served_model_name"].startswith("skingpt4-") and len(info["served_model_name"]) == 25
    other = json.loads((exports / "llama2_chat" / "skingpt4_export.json").read_text())
    assert other["served_model_name"] != info["served_model_name"]  # another template: another served model
    assert "--enable-prompt-embeds" in info["serve_command"] and info["model"]["variant"] == "tiny"


def test_demo_engine_builder_hook(served, capsys):
    """The demo's --server option builds the served engine through its loader; the page names the export's model."""
    from skingpt4.chat.build import ChatRunConfig
    from skingpt4.chat.remote_engine import build_remote_engine
    from skingpt4.demo.launch import main as demo_main
    from skingpt4.demo.loading import ModelLoader

    fake, url = served
    loader = ModelLoader(lambda: build_remote_engine(url, fake.export_dir, ChatRunConfig()))
    loader._load()
    assert loader.error is None and isinstance(loader.engine, RemoteChatEngine)
    assert loader.model_line.startswith("Model: tiny") and "projection" in loader.model_line
    assert demo_main(["--cfg-path", CFG, "--server", url]) == 2
    assert "go together" in capsys.readouterr().err


def test_bench_serve_measures_the_served_path(served):
    from benchmarks.bench_serve import measure

    fake, url = served
    engine = RemoteChatEngine.from_export(fake.export_dir, url, concurrency=3)
    row = measure(engine, conversations=3, concurrency=3, turns=2, max_new_tokens=4)
    assert row["answers"] == 6 and 0 < row["generated_tokens"] <= 24
    assert 0 < row["latency_p50_s"] <= row["latency_p95_s"] and row["ttft_p50_s"] > 0 and row["answers_per_s"] > 0


@pytest.mark.parametrize("answer, expected", [
    ({"choices": []}, r"without choices\[0\]\.text"),
    ({"choices": [{"text": 3}]}, r"without choices\[0\]\.text"),
    ({"choices": [{"text": "x", "token_ids": [1, 99999]}]}, "not ids of the served vocabulary"),
    ({"choices": [{"text": "x", "token_ids": [1.5]}]}, "not ids of the served vocabulary"),
    ({"choices": [{"text": "x", "token_ids": list(range(2, 40))}]}, "more than the 16 asked"),
])
def test_bad_completions_are_one_line_errors(exports, photo, answer, expected):
    from fake_openai_server import HostileServer, http_response
    from skingpt4.chat.http_client import ServerError

    server = HostileServer(http_response(json.dumps(answer).encode()))
    try:
        client, info = load_client_model(exports / "vicuna_v0", "cpu")
        engine = RemoteChatEngine(client, info, server.url)
        conv = engine.new_conversation(str(photo))
        with pytest.raises(ServerError, match=expected) as err:
            engine.ask(conv, CLINICAL_PROMPTS[0], GREEDY)
        assert "\n" not in str(err.value) and conv.history == []  # nothing half-recorded
    finally:
        server.close()
