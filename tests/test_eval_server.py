"""`evaluate.py --server URL --export-dir DIR` on the tiny world against the fake prompt-embeds vLLM
(tests/fake_openai_server.py): the same metrics, answers and record fields as the local evaluation, many requests
in flight, the differential said to be not served."""
import json
import threading

import pytest

from evaluate import main as evaluate_main
from fake_openai_server import FakePromptEmbedsServer
from skingpt4.export.cli import main as export_main

CFG = "eval_configs/evaluate_tiny.yaml"
GREEDY = ["evaluation.decoding.do_sample=false", "evaluation.decoding.max_new_tokens=24"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """The synthetic generator's Dermnet `test/` folder: 1 image (64 px) per class, 16 in all."""
    from data_prep.make_synthetic import make_dermnet

    raw = tmp_path_factory.mktemp("synthetic")
    make_dermnet(raw, {"test": 1}, size=64, seed=0)
    return raw / "dermnet" / "test"


@pytest.fixture(scope="module")
def served(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm_export") / "tiny"
    assert export_main(["--cfg-path", CFG, "--target", "vllm", "--out", str(out)]) == 0
    fake = FakePromptEmbedsServer(out)
    in_flight, peak = [0], [0]
    complete, lock = fake.complete, threading.Lock()

    def counted(body):  # how many requests the server holds at once
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return complete(body)
        finally:
            with lock:
                in_flight[0] -= 1

    fake.complete = counted
    http, url = fake.serve()
    yield out, url, peak
    http.shutdown()
    http.server_close()


def test_served_metrics_equal_local(served, cases, tmp_path, capsys):
    export_dir, url, peak = served
    options = GREEDY + [f"evaluation.cases={cases}"]
    assert evaluate_main(["--cfg-path", CFG, "--task", "metrics", "--out", str(tmp_path / "local"),
                          "--options", *options]) == 0
    assert evaluate_main(["--cfg-path", CFG, "--task", "metrics", "--out", str(tmp_path / "served"),
                          "--server", url, "--export-dir", str(export_dir), "--concurrency", "8",
                          "--options", *options]) == 0
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    remote = json.loads((tmp_path / "served" / "metrics.json").read_text())
    assert remote == local and local["n"] == 16
    local_rows = (tmp_path / "local" / "predictions.csv").read_text().splitlines()
    remote_rows = (tmp_path / "served" / "predictions.csv").read_text().splitlines()
    # the same answers and predictions; the differential column is empty when served
    assert [r.split(",")[:3] for r in remote_rows] == [r.split(",")[:3] for r in local_rows]
    summary = json.loads((tmp_path / "served" / "summary.json").read_text())
    local_summary = json.loads((tmp_path / "local" / "summary.json").read_text())
    for key in ("variant", "projection_sha256", "model_config_sha256", "checkpoint_sha256", "chat_template"):
        assert summary[key] == local_summary[key], key
    assert summary["server"] == url and summary["served_model"].startswith("skingpt4-")
    assert summary["diagnosis"]["free_text_vs_differential"]["served"] is False
    assert peak[0] > 1  # several requests in flight at once


def test_served_clinical_records_match_local(served, cases, tmp_path):
    export_dir, url, _ = served
    options = GREEDY + [f"evaluation.cases={cases}", "evaluation.limit=3"]
    for name, extra in (("local", []), ("served", ["--server", url, "--export-dir", str(export_dir)])):
        assert evaluate_main(["--cfg-path", CFG, "--task", "clinical", "--out", str(tmp_path / name), *extra,
                              "--options", *options]) == 0
    local = sorted((tmp_path / "local" / "records").glob("*.json"))
    assert len(local) == 3
    for path in local:
        mine, theirs = json.loads(path.read_text()), json.loads((tmp_path / "served" / "records" / path.name).read_text())
        assert [a["answer"] for a in theirs["answers"]] == [a["answer"] for a in mine["answers"]]
        assert set(theirs) == set(mine) | {"server", "served_model"}
        for key in ("projection_sha256", "model_config_sha256", "decoding", "seed", "chat_template", "image_sha256"):
            assert theirs[key] == mine[key], key


def test_served_evaluation_errors(served, cases, tmp_path, capsys):
    export_dir, url, _ = served

    def error(extra, expected):
        code = evaluate_main(["--cfg-path", CFG, "--task", extra[0], "--out", str(tmp_path / "x"), *extra[1:],
                              "--options", f"evaluation.cases={cases}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err

    error(["calibrate", "--server", url, "--export-dir", str(export_dir)], "can be served: clinical, metrics")
    error(["ablation", "--server", url, "--export-dir", str(export_dir)], "can be served")
    error(["metrics", "--server", url], "go together")
    error(["metrics", "--server", "http://127.0.0.1:9/v1", "--export-dir", str(export_dir)], "cannot reach")


def test_served_consistency_and_response_time(served, cases, tmp_path):
    export_dir, url, _ = served
    served_args = ["--server", url, "--export-dir", str(export_dir)]
    options = ["evaluation.decoding.max_new_tokens=8", f"evaluation.cases={cases}", "evaluation.consistency.runs=2",
               "evaluation.consistency.cases=3", "evaluation.response_time.cases=2", "evaluation.response_time.warmup=0"]
    assert evaluate_main(["--cfg-path", CFG, "--task", "consistency", "--out", str(tmp_path / "c"), *served_args,
                          "--options", *options]) == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["greedy_control"]["consistency_ratio"] == 1.0 and summary["served_model"].startswith("skingpt4-")
    assert evaluate_main(["--cfg-path", CFG, "--task", "response_time", "--out", str(tmp_path / "r"), *served_args,
                          "--options", *options]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["seconds"]["all answers"]["n"] == 8
