"""Every evaluation task end to end on the tiny model with synthetic Dermnet-layout images: each output file
is produced and parses, bad cases are reported while the run goes on, greedy runs are 100% consistent."""
import csv
import hashlib
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from skingpt4.chat import ChatEngine
from skingpt4.common.config import ConfigError
from skingpt4.evaluation import tasks
from skingpt4.evaluation.questionnaire import STATEMENTS
from skingpt4.common.fingerprint import sha256_json
from skingpt4.models.checkpoints import save_checkpoint, CheckpointError
from skingpt4.prompting.clinical import CLINICAL_LABELS

FAST = {"do_sample": True, "max_new_tokens": 6}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's matrices are too small to gain from 2 threads, and on a busy 2-core machine the
    threads' spin-waiting made these tests 10x slower; restored afterwards for the other test files."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dermnet_test(tmp_path_factory) -> Path:
    """The synthetic generator's Dermnet `test/` folder: 1 image (64 px) per class, 16 in all."""
    from data_prep.make_synthetic import make_dermnet

    raw = tmp_path_factory.mktemp("synthetic")
    make_dermnet(raw, {"test": 1}, size=64, seed=0)
    return raw / "dermnet" / "test"


@pytest.fixture(scope="module")
def engine(tiny_model):
    return ChatEngine(tiny_model)


def context(engine, out, **evaluation) -> tasks.EvalContext:
    cfg = OmegaConf.create({"model": {"variant": "tiny"}, "evaluation": {"decoding": FAST, **evaluation}})
    out.mkdir(parents=True, exist_ok=True)
    return tasks.EvalContext(cfg, out, chat=engine)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_clinical_on_16_synthetic_cases_with_bad_ones_reported(engine, dermnet_test, tmp_path):
    cases = tmp_path / "cases"
    shutil.copytree(dermnet_test, cases)
    (cases / "Urticaria Hives" / "zz-corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = cases / "Vascular Tumors" / "synthetic-test-20-0000.jpg"
    (cases / "Vascular Tumors" / "zz-truncated.jpg").write_bytes(good.read_bytes()[:300])
    shutil.copy(good, cases / "Systemic Disease" / "unplaced.jpg")  # a folder the paper does not place
    ctx = context(engine, tmp_path / "out", cases=str(cases), batch_size=8)  # 19 files: 17 good + 2 bad
    summary = tasks.clinical(ctx)

    assert (summary["cases"], summary["completed"], summary["skipped"]) == (19, 17, 2)
    problems = json.loads((ctx.out / "problems.json").read_text())
    reasons = {p["case_id"]: p["reason"] for p in problems}
    assert reasons["Urticaria Hives/zz-corrupt"].startswith("image not_an_image:")
    assert reasons["Vascular Tumors/zz-truncated"].startswith("image ")  # truncated or unreadable, per Pillow

    records = [json.loads(p.read_text()) for p in sorted((ctx.out / "records").glob("*.json"))]
    assert len(records) == 17
    by_id = {r["case_id"]: r for r in records}
    rec = by_id["Vascular Tumors/synthetic-test-20-0000"]
    assert rec["label"] == "Vascular tumors"
    assert rec["image_sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert rec["model_config_sha256"] == sha256_json(engine.model.cfg)
    assert rec["checkpoint"] is None and len(rec["projection_sha256"]) == 64
    assert [a["prompt"] for a in rec["answers"]] == list(ctx.ev.prompts)
    assert all(isinstance(a["answer"], str) and a["seed"] is not None and a["seconds"] > 0 for a in rec["answers"])
    assert rec["decoding"]["max_new_tokens"] == 6 and rec["seed"] == 0 and rec["chat_template"] == "vicuna_v0"
    assert by_id["Systemic Disease/unplaced"]["label"] == "Others"  # unplaced folder, default Others

    blank = read_csv(ctx.out / "questionnaire_blank.csv")
    assert len(blank) == 17 * len(STATEMENTS) and {r["case_id"] for r in blank} == set(by_id)

    class Images(HTMLParser):
        count = 0

        def handle_starttag(self, tag, attrs):
            if tag == "img" and dict(attrs)["src"].startswith("data:image/jpeg;base64,"):
                self.count += 1

    page = Images()
    page.feed((ctx.out / "report.html").read_text())
    assert page.count == 17
    assert "zz-corrupt" in (ctx.out / "report.html").read_text()  # skipped cases are listed for the reviewers
    assert json.loads((ctx.out / "summary.json").read_text())["cases_per_minute"] > 0


def test_sampled_answers_are_reproduced_from_the_recorded_seeds(engine, dermnet_test, tmp_path):
    answers = []
    for run in ("a", "b"):
        ctx = context(engine, tmp_path / run, cases=str(dermnet_test), limit=3, batch_size=2,
                      prompts=["Could you describe the skin disease in this image for me?", "And the cause?"])
        tasks.clinical(ctx)
        answers.append([json.loads(p.read_text())["answers"] for p in sorted((ctx.out / "records").glob("*.json"))])
    texts = lambda run: [[a["answer"] for a in case] for case in run]  # noqa: E731
    assert texts(answers[0]) == texts(answers[1])
    assert len({a["seed"] for case in answers[0] for a in case}) > 1  # a fresh seed per batched call


def test_missing_image_in_a_csv_is_reported_and_the_run_goes_on(engine, dermnet_test, tmp_path):
    table = tmp_path / "cases.csv"
    image = dermnet_test / "Herpes HPV and other STDs Photos" / "synthetic-test-08-0000.jpg"
    table.write_text(f"case_id,image,label\nok,{image},Herpes\ngone,missing.jpg,Herpes\n")
    ctx = context(engine, tmp_path / "out", cases=str(table))
    summary = tasks.clinical(ctx)
    assert (summary["completed"], summary["skipped"]) == (1, 1)
    problem = json.loads((ctx.out / "problems.json").read_text())[0]
    assert problem["case_id"] == "gone" and problem["reason"] == f"image missing: no such file '{tmp_path / 'missing.jpg'}'"


def test_consistency_is_100_percent_under_greedy(engine, dermnet_test, tmp_path, capsys):
    ctx = context(engine, tmp_path, cases=str(dermnet_test), consistency={"runs": 3, "cases": 4}, batch_size=4)
    summary = tasks.consistency(ctx)
    greedy, sampled = summary["greedy_control"], summary["decoding"]
    # the unknown rate stands beside the ratio, so that agreeing on "no class named" cannot pass for consistency
    assert 0 <= greedy["unknown_rate"] <= 1 and "unknown_rate" in capsys.readouterr().out
    assert (greedy["cases"], greedy["runs"]) == (4, 12)
    assert greedy["consistency_ratio"] == 1.0 and greedy["same_text_ratio"] == 1.0
    assert sampled["same_text_ratio"] < 1.0  # the recorded seeds differ between runs
    for mode in ("greedy_control", "decoding"):
        assert len(read_csv(tmp_path / mode / "consistency_per_case.csv")) == 4
        assert len(read_csv(tmp_path / mode / "answers.csv")) == 12
        assert (tmp_path / mode / "consistency.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_by_skin_type_and_concept_recall(engine, dermnet_test, tmp_path):
    folders = sorted(p for p in dermnet_test.iterdir())[:4]
    rows = ["case_id,image,label,skin_type,concepts"]
    for i, folder in enumerate(folders):
        image = next(folder.glob("*.jpg"))
        rows.append(f"c{i},{image},{folder.name},{['VI', 'I', 'V-VI', 'I-II'][i]},Erythema;Scale")
    table = tmp_path / "cases.csv"
    table.write_text("\n".join(rows) + "\n")
    ctx = context(engine, tmp_path / "out", cases=str(table))
    summary = tasks.metrics(ctx)
    assert summary["diagnosis"]["n"] == 4 and summary["concepts"]["images"] == 4
    # Fitzpatrick types and DDI skin-tone bands are two scales: two tables, never one
    assert [r["group"] for r in read_csv(ctx.out / "by_fitzpatrick_type.csv")] == ["I", "VI"]
    assert [r["group"] for r in read_csv(ctx.out / "by_ddi_skin_tone.csv")] == ["I-II", "V-VI"]
    assert not (ctx.out / "by_skin_type.csv").exists()
    assert list(summary["diagnosis"]["by_skin_type"]) == ["fitzpatrick", "ddi"]
    predictions = read_csv(ctx.out / "predictions.csv")
    assert [p["label"] for p in predictions][:2] == ["Acne and rosacea", "Malignant lesions"]
    # free text and differential side by side: every case has a top-1, the disagreements are listed
    side = summary["diagnosis"]["free_text_vs_differential"]
    assert side["n"] == 4 and all(p["differential_top1"] for p in predictions)
    differ = [p for p in predictions if p["differential_top1"] != p["predicted"]]
    assert side["disagreements"] == len(differ) == len(read_csv(ctx.out / "disagreements.csv"))
    metrics = json.loads((ctx.out / "metrics.json").read_text())
    assert sum(map(sum, metrics["confusion"]["counts"])) == 4
    assert (ctx.out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert {r["concept"] for r in read_csv(ctx.out / "concept_recall_per_concept.csv")} == {"Erythema", "Scale"}


def test_response_time_one_case_at_a_time(engine, dermnet_test, tmp_path):
    ctx = context(engine, tmp_path, cases=str(dermnet_test), response_time={"cases": 3, "warmup": 1})
    summary = tasks.response_time(ctx)
    rows = read_csv(tmp_path / "latency.csv")
    assert len(rows) == 3 * 4 and summary["seconds"]["all answers"]["n"] == 12
    # each prompt is named (as on the demo's buttons), not "prompt 1-4"
    assert [summary["seconds"][name]["n"] for name in CLINICAL_LABELS] == [3, 3, 3, 3]
    assert [r["prompt_name"] for r in rows[:4]] == list(CLINICAL_LABELS)
    assert summary["seconds"]["whole case"]["n"] == 3
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_ablation_table_over_two_checkpoints(tiny_assets, dermnet_test, tmp_path):
    import torch

    from skingpt4.models import build_model

    model = build_model({"variant": "tiny"})  # own model: the ablation swaps its projection
    paths = {}
    for name, seed in (("step1_only", 1), ("two_step", 2)):
        torch.manual_seed(seed)
        torch.nn.init.normal_(model.llama_proj.weight)
        paths[name] = str(save_checkpoint(tmp_path / f"{name}.pth", model.trainable_state_dict()))
    ctx = context(ChatEngine(model), tmp_path / "out", cases=str(dermnet_test), limit=3,
                  ablation={"checkpoints": paths})
    summary = tasks.ablation(ctx)
    rows = read_csv(ctx.out / "ablation.csv")
    assert [r["checkpoint"] for r in rows] == ["step1_only", "two_step"]
    assert rows[0]["projection_sha256"] != rows[1]["projection_sha256"]
    assert len(rows[0]["projection_sha256"]) == 64  # the whole SHA-256 in the CSV
    # the metrics task measures no consistency, and these cases carry no SKINCON concepts: said, not left empty
    assert rows[0]["consistency_ratio"] == rows[0]["concept_micro_recall"] == "not measured"
    assert rows[0]["accuracy"] not in ("", "not measured")
    assert summary["not_measured"] == ["concept_micro_recall", "consistency_ratio"]
    assert summary["rows"][0]["path"] == paths["step1_only"]
    record = json.loads((ctx.out / "two_step" / "summary.json").read_text())
    assert record["checkpoint"] == paths["two_step"] and len(record["checkpoint_sha256"]) == 64

    ctx = context(ChatEngine(model), tmp_path / "bad", cases=str(dermnet_test),
                  ablation={"checkpoints": {"baseline": str(tmp_path / "nope.pth")}})
    with pytest.raises(ConfigError, match=r"config key 'evaluation.ablation.checkpoints.baseline': no such file"):
        tasks.ablation(ctx)

    # a projection for a 13B LLM (H = 5120) does not fit the tiny LLM: refused before anything is evaluated
    wide = tmp_path / "llama13b_proj.pth"
    torch.save({"model": {"llama_proj.weight": torch.zeros(5120, 64), "llama_proj.bias": torch.zeros(5120)}}, wide)
    ctx = context(ChatEngine(model), tmp_path / "wide", cases=str(dermnet_test),
                  ablation={"checkpoints": {"two_step": paths["two_step"], "thirteen_b": str(wide)}})
    with pytest.raises(CheckpointError, match="checkpoint projects to 5120"):
        tasks.ablation(ctx)
    assert not (tmp_path / "wide" / "two_step").exists()


def test_unknown_concept_names_are_refused_before_generating(engine, dermnet_test, tmp_path):
    image = next((dermnet_test / "Urticaria Hives").glob("*.jpg"))
    (tmp_path / "cases.csv").write_text(f"image,concepts\n{image},Scaly;Erythema\n")
    ctx = context(engine, tmp_path / "out", cases=str(tmp_path / "cases.csv"))
    with pytest.raises(ConfigError, match=r"does not know: \['Scaly'\]"):
        tasks.metrics(ctx)
    assert not (tmp_path / "out" / "concept_predictions.csv").exists()


def test_a_killed_clinical_run_is_resumed(engine, dermnet_test, tmp_path):
    ctx = context(engine, tmp_path, cases=str(dermnet_test), limit=3, batch_size=2,
                  prompts=["Could you describe the skin disease in this image for me?"])
    tasks.clinical(ctx)
    records = sorted((tmp_path / "records").glob("*.json"))
    kept = records[0].read_text()
    records[1].unlink()  # as if the run had been killed before this case was written
    with pytest.raises(ConfigError, match=r"already holds 2 case record\(s\); pass --resume"):
        tasks.clinical(ctx)
    ctx.resume = True
    summary = tasks.clinical(ctx)
    assert (summary["completed"], summary["resumed"]) == (3, 2)
    assert records[0].read_text() == kept and records[1].is_file()
    assert len(read_csv(tmp_path / "questionnaire_blank.csv")) == 3 * len(STATEMENTS)

    ctx.ev.seed = 1
    with pytest.raises(ConfigError, match="cannot resume: .* was made with different seed"):
        tasks.clinical(ctx)


def test_batched_sessions_equal_one_at_a_time_under_greedy(engine, dermnet_test):
    """Batching across cases (left padding) must not change what each case is told, only how fast."""
    from skingpt4.chat import DecodingConfig
    from skingpt4.evaluation.cases import load_cases
    from skingpt4.prompting.clinical import CLINICAL_PROMPTS
    from skingpt4.evaluation.extract import ClassExtractor
    from skingpt4.evaluation.sessions import run_sessions

    cases, _ = load_cases(dermnet_test, ClassExtractor(), limit=5)
    greedy = DecodingConfig(do_sample=False, max_new_tokens=8)
    one = run_sessions(engine, cases, CLINICAL_PROMPTS[:2], greedy, batch_size=1, seed=0)[0]
    batched = run_sessions(engine, cases, CLINICAL_PROMPTS[:2], greedy, batch_size=5, seed=0)[0]
    assert [[a["answer"] for a in s.answers] for s in one] == [[a["answer"] for a in s.answers] for s in batched]
    assert {a["batch_size"] for s in batched for a in s.answers} == {5}


def test_a_failing_conversation_loses_only_its_case(engine, dermnet_test, monkeypatch):
    from skingpt4.chat import DecodingConfig
    from skingpt4.evaluation.cases import CaseError, load_cases
    from skingpt4.evaluation.extract import ClassExtractor
    from skingpt4.evaluation.sessions import run_sessions

    cases, _ = load_cases(dermnet_test, ClassExtractor(), limit=3)
    real_ask, calls = engine.ask, []

    def batch_fails(convs, questions, decoding):
        raise RuntimeError("CUDA out of memory (simulated)")

    def ask(conv, question, decoding):  # the second case's first question fails
        calls.append(question)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real_ask(conv, question, decoding)

    monkeypatch.setattr(engine, "ask_batch", batch_fails)
    monkeypatch.setattr(engine, "ask", ask)
    greedy = DecodingConfig(do_sample=False, max_new_tokens=4)
    sessions, problems = run_sessions(engine, cases, ["First?", "Second?"], greedy, batch_size=3, seed=0)
    assert [s.case.case_id for s in sessions] == [cases[0].case_id, cases[2].case_id]
    assert all(len(s.answers) == 2 and s.answers[0]["batch_size"] == 1 for s in sessions)
    assert problems == [{"case_id": cases[1].case_id, "image": str(cases[1].image),
                         "reason": "failed on prompt 'First?': RuntimeError: boom"}]

    monkeypatch.setattr(engine, "ask", lambda *a: (_ for _ in ()).throw(RuntimeError("broken")))
    with pytest.raises(CaseError, match=r"all 3 case\(s\) failed; the first: .*RuntimeError: broken"):
        run_sessions(engine, cases, ["First?"], greedy, batch_size=3, seed=0)
