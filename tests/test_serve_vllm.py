"""vLLM serving on a GPU machine: `export --target vllm`, scripts/serve_vllm.sh (vllm serve DIR/llm
--enable-prompt-embeds), then the client: its greedy answers equal the local engine's. Skipped without a CUDA
GPU and a `vllm` command (set SKINGPT4_VLLM to its path, e.g. .venv-vllm/bin/vllm). The script's refusals run
everywhere."""
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from skingpt4.chat.cli import main as local_main
from skingpt4.chat.http_client import ServerAddress, ServerError, StrictClient
from skingpt4.chat.remote import main as remote_main
from skingpt4.export.cli import main as export_main

REPO = Path(__file__).resolve().parents[1]
VLLM = os.environ.get("SKINGPT4_VLLM") or shutil.which("vllm")
CFG = "eval_configs/skingpt4_tiny.yaml"
needs_vllm = pytest.mark.skipif(not (torch.cuda.is_available() and VLLM),
                                reason="vLLM serving needs a CUDA GPU and vLLM (SKINGPT4_VLLM or vllm on PATH)")


def test_serve_script_refuses_what_is_not_a_vllm_export(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts" / "serve_vllm.sh"), str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "VLLM": "/nonexistent/vllm"})
    assert done.returncode == 2 and "not a --target vllm export" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@needs_vllm
def test_vllm_serves_the_export_exactly(tiny_assets, tmp_path):
    from PIL import Image

    export = tmp_path / "export"
    assert export_main(["--cfg-path", CFG, "--target", "vllm", "--out", str(export)]) == 0
    photo = tmp_path / "lesion.png"
    Image.new("RGB", (96, 80), (200, 60, 60)).save(photo)
    port = "8765"
    url = f"http://127.0.0.1:{port}/v1"
    log = open(tmp_path / "vllm.log", "w")
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "serve_vllm.sh"), str(export), "--dtype", "float32",
                             "--max-model-len", "1024", "--gpu-memory-utilization", "0.3", "--enforce-eager"],
                            env={**os.environ, "VLLM": VLLM, "PORT": port}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 420
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "vllm.log").read_text()[-3000:]
            try:
                StrictClient(ServerAddress.parse(url), timeout=2).get("/models")
                break
            except ServerError:
                time.sleep(2)
        argv = ["--image", str(photo), "--clinical", "--greedy", "--max-new-tokens", "12"]
        out = io.StringIO()
        assert remote_main(["--server", url, "--export-dir", str(export), *argv], out=out) == 0
        served = json.loads(out.getvalue())["answers"]
        out = io.StringIO()
        assert local_main(["--cfg-path", CFG, "--format", "json", *argv], out=out) == 0
        local = json.loads(out.getvalue())["answers"]
        assert [a["answer"] for a in served] == [a["answer"] for a in local]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
