"""`python evaluate.py` as a user runs it: the questionnaire task through a real subprocess, and the exit
code and message of a config typo."""
import csv
import subprocess
import sys
from pathlib import Path

from evaluate import main as evaluate_main

REPO_ROOT = Path(__file__).resolve().parents[1]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_questionnaire_and_config_errors(subprocess_env, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("evaluation:\n  cases: null\n")
    filled = tmp_path / "dr_a.csv"
    filled.write_text("case_id,statement_id,statement,rating,reviewer,comment\n"
                      "c1,diagnosis,x,5,,\nc2,diagnosis,x,2,,\nc2,useful,x,maybe,,\n")
    cmd = [sys.executable, str(REPO_ROOT / "evaluate.py"), "--cfg-path", str(config), "--task", "questionnaire",
           "--out", str(tmp_path / "out"), "--inputs", str(filled)]
    done = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = {r["statement_id"]: r for r in read_csv(tmp_path / "out" / "fig4a_table.csv")}
    assert (table["diagnosis"]["n"], table["diagnosis"]["strongly_agree"], table["diagnosis"]["disagree"]) == ("2", "50.0", "50.0")
    bad = read_csv(tmp_path / "out" / "questionnaire_problems.csv")
    assert [(b["line"], b["reason"][:22]) for b in bad] == [("4", "invalid rating 'maybe'")]
    assert (tmp_path / "out" / "fig4a.png").read_bytes()[:4] == b"\x89PNG"

    config.write_text("evaluation:\n  batch_sise: 4\n")
    assert evaluate_main(cmd[2:]) == 2
    assert "unknown key 'evaluation.batch_sise' (did you mean 'batch_size'?)" in capsys.readouterr().err


def test_questionnaire_checks_case_ids_against_a_clinical_run(tmp_path, capsys):
    records = tmp_path / "clinical" / "records"
    records.mkdir(parents=True)
    (records / "c1.json").write_text('{"case_id": "c1"}')
    config = tmp_path / "eval.yaml"
    config.write_text(f"evaluation:\n  questionnaire:\n    clinical_dir: {tmp_path / 'clinical'}\n")
    filled = tmp_path / "dr_b.csv"
    filled.write_text("case_id,statement_id,rating\nc1,privacy,SA\nc7,privacy,SA\n")
    assert evaluate_main(["--cfg-path", str(config), "--task", "questionnaire", "--out", str(tmp_path / "out"),
                          "--inputs", str(filled)]) == 0
    assert [b["reason"] for b in read_csv(tmp_path / "out" / "questionnaire_problems.csv")] == ["unknown case_id 'c7'"]
    privacy = next(r for r in read_csv(tmp_path / "out" / "fig4a_table.csv") if r["statement_id"] == "privacy")
    assert (privacy["n"], privacy["strongly_agree"], privacy["agree_total"]) == ("1", "100.0", "100.0")
