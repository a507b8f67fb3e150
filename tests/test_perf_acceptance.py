"""benchmarks/gpu_acceptance.py runs on a CPU with `--arch small` (the same code the GPU run uses): it writes one
JSON file with every section's figures and a table of figures beside their targets. Speed is never asserted."""
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def acceptance(tmp_path_factory):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_acceptance

    threads = torch.get_num_threads()
    try:
        result = gpu_acceptance.main(["--arch", "small", "--quick", "--out", str(tmp_path_factory.mktemp("acc")),
                                      "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    return result


def test_small_run_measures_every_section(acceptance):
    res = acceptance
    assert res["errors"] == {}
    assert res["meta"]["arch"] == "small" and res["meta"]["device"] == "cpu"
    assert [r["batch"] for r in res["encode"]] == [1, 2]
    assert {(r["variant"], r["batch"], r["turn"]) for r in res["chat"]} == {
        (v, b, t) for v in ("dynamic", "static") for b in (1, 2) for t in (1, 10)}
    for row in res["chat"]:
        assert row["new_tokens"] == 8  # replies run to their budget: every variant decodes the same
        assert row["kv_cache_mib"] == pytest.approx(row["kv_cache_bound_mib"])
    tenth = next(r for r in res["chat"] if (r["variant"], r["batch"], r["turn"]) == ("dynamic", 1, 10))
    assert tenth["reused_tokens"] > 0.8 * tenth["prompt_tokens"]  # KV-cache reuse at turn 10
    assert res["tokens_identical"] == {"static": True}
    layouts = [(r["images"], r["batch"], r["layout"]) for r in res["train"]]
    assert layouts == [("live", 2, "padded"), ("live", 4, "padded"), ("cached", 2, "padded"),
                       ("cached", 4, "padded"), ("cached", 4, "packed512"), ("cached", 4, "packed2048")]
    for row in res["train"]:
        assert set(row["split_ms"]) == {"data", "vision", "llm_fwd_bwd", "optimizer"}
        assert row["samples_per_s"] > 0 and row["flops_per_sample"] > 0
    assert res["train"][2]["split_ms"]["vision"] < res["train"][0]["split_ms"]["vision"]  # cached: no ViT
    assert {r["optimizer"] for r in res["optimizer"]} == {"for_loop", "foreach", "fused"}
    assert res["vit_precision"]["bf16"]["rel_error"] < 0.05
    assert "CUDA" in res["skipped"]["8bit"] and "compiled" in res["skipped"]


def test_json_and_table_are_written(acceptance):
    out = Path(acceptance["meta"]["args"]["out"])
    [path] = out.glob("*_small_*.json")
    assert json.loads(path.read_text())["checks"] == acceptance["checks"]
    table = path.with_suffix(".md").read_text()
    assert "decode tok/s, batch 1, turn 1 [dynamic]" in table and "train samples/s" in table
    assert all(check["pass"] is None for check in acceptance["checks"])  # GPU targets: not judged on a CPU


def test_a_remade_random_llm_has_the_same_weights():
    """The acceptance run remakes the 16-bit LLM after quantizing it and compares tokens with the first one."""
    from types import SimpleNamespace

    from skingpt4.models.llm import random_llm
    from skingpt4.tiny.random_models import ARCHS

    shapes = {**ARCHS["small"][1], "vocab_size": 100}
    ids = SimpleNamespace(bos_token_id=1, eos_token_id=2)  # the shapes name the vocabulary: no tokenizer needed
    made = []
    for _ in range(2):
        torch.manual_seed(0)
        made.append(random_llm(shapes, ids, torch.float32, torch.device("cpu")).state_dict())
    assert all(torch.equal(made[0][k], made[1][k]) for k in made[0])
    assert not made[0]["model.layers.0.self_attn.q_proj.weight"].eq(0).all()
