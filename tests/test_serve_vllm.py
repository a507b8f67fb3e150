"""vLLM serving on a GPU machine: scripts/serve_vllm.sh on the tiny export, then the client's JSON. Skipped
without a CUDA GPU and a `vllm` command (set SKINGPT4_VLLM to its path, e.g. .venv-vllm/bin/vllm)."""
import io
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from skingpt4.chat.remote import main as remote_main
from skingpt4.prompting import CLINICAL_PROMPTS

REPO = Path(__file__).resolve().parents[1]
VLLM = os.environ.get("SKINGPT4_VLLM") or shutil.which("vllm")
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and VLLM),
                                reason="vLLM serving needs a CUDA GPU and vLLM (SKINGPT4_VLLM or vllm on PATH)")


def test_vllm_serves_the_export(tiny_export, tmp_path):
    from PIL import Image

    photo = tmp_path / "lesion.png"
    Image.new("RGB", (96, 80), (200, 60, 60)).save(photo)
    port = "8765"
    env = {**os.environ, "VLLM": VLLM, "PORT": port}
    log = open(tmp_path / "vllm.log", "w")
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "serve_vllm.sh"), str(tiny_export), "--dtype", "float32",
                             "--max-model-len", "1024", "--gpu-memory-utilization", "0.3", "--enforce-eager"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 420
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "vllm.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                    if json.loads(response.read())["data"][0]["id"] == "skingpt4":
                        break
            except OSError:
                time.sleep(2)
        out = io.StringIO()
        code = remote_main(["--url", f"http://127.0.0.1:{port}/v1", "--image", str(photo), "--clinical", "--greedy",
                            "--max-new-tokens", "12"], out=out)
        assert code == 0
        answers = json.loads(out.getvalue())["answers"]
        assert [a["question"] for a in answers] == list(CLINICAL_PROMPTS)
        assert all(0 < a["new_tokens"] <= 12 for a in answers)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
