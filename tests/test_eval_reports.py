"""What a reviewer reads in the evaluation's output: questionnaire rows are counted as rows, the two skin-tone
scales are separate tables, latency plots name the questions, `--help` keeps its examples' line breaks, and a
training run on webdataset shards says where it streams from."""
import logging

import pytest
from omegaconf import OmegaConf

from evaluate import main as evaluate_main
from skingpt4.evaluation import latency
from skingpt4.evaluation import metrics as met
from skingpt4.prompting.clinical import CLINICAL_PROMPTS, prompt_name


def test_questionnaire_summary_counts_left_out_rows(tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("evaluation:\n  cases: null\n")
    filled = tmp_path / "dr_a.csv"
    filled.write_text("case_id,statement_id,statement,rating,reviewer,comment\n"
                      "c1,diagnosis,x,5,,\nc2,diagnosis,x,maybe,,\nc3,useful,x,,,\nc4,nope,x,4,,\n,useful,x,4,,\n")
    assert evaluate_main(["--cfg-path", str(config), "--task", "questionnaire", "--out", str(tmp_path / "out"),
                          "--inputs", str(filled)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (f"questionnaire: wrote {tmp_path / 'out'} (1 rating(s) counted, 4 row(s) left out, see "
                    "questionnaire_problems.csv)")


def test_missing_questionnaire_files_are_listed_at_once(tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("evaluation:\n  cases: null\n")
    assert evaluate_main(["--cfg-path", str(config), "--task", "questionnaire", "--out", str(tmp_path / "out"),
                          "--inputs", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 2 paths in the config need fixing: (1) config key 'evaluation.questionnaire.inputs[0]': "
                          "no such file ")
    assert "b.csv" in err and len(err.splitlines()) == 1


def test_fitzpatrick_types_and_ddi_bands_are_separate_tables():
    groups = ["VI", "I-II", "I", "V-VI", "II", "III-IV", "lab group", None]
    truth = ["A"] * len(groups)
    tables = met.stratified_by_scale(truth, ["A", "B", "A", "A", "B", "A", "A", "A"], groups, ["A", "B"])
    assert list(tables) == ["fitzpatrick", "ddi", "other"]
    assert [r["group"] for r in tables["fitzpatrick"]] == ["I", "II", "VI"]
    assert [r["group"] for r in tables["ddi"]] == ["I-II", "III-IV", "V-VI"]
    assert [(r["group"], r["accuracy"]) for r in tables["other"]] == [("lab group", 1.0)]
    assert (met.skin_scale("iii"), met.skin_scale("III\u2013IV"), met.skin_scale("12")) == ("fitzpatrick", "ddi",
                                                                                           "other")


def test_latency_plot_names_the_questions(monkeypatch, tmp_path):
    seen = {}

    def keep_labels(fig, path):
        seen["labels"] = [t.get_text().replace("\n", " ") for t in fig.axes[0].get_xticklabels()]
        return path

    monkeypatch.setattr(latency, "save_figure", keep_labels)
    names = [prompt_name(p, i) for i, p in enumerate(CLINICAL_PROMPTS)]
    latency.plot_latency({"all answers": [1.0, 2.0], **{n: [1.0] for n in names}}, tmp_path / "latency.png")
    assert seen["labels"] == ["all answers", "Describe the skin disease", "Additional features", "Cause",
                              "Treatment and medication"]
    assert prompt_name("Is it contagious to my family members?", 4) == "Q5: Is it contagious to my…"


def test_help_keeps_the_line_break_of_its_examples(capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["--help"])
    assert "--out output/eval/fig4a \\\n        --inputs reviewer_a.csv reviewer_b.csv" in capsys.readouterr().out


def test_webdataset_source_announces_its_shards(train_data, tmp_path, caplog):
    from data_prep.write_shards import write_shards
    from skingpt4.datasets import build_datasets

    write_shards(train_data / "skincon", tmp_path / "shards", maxcount=6)
    with caplog.at_level(logging.INFO, logger="skingpt4"):
        build_datasets(OmegaConf.create({"stream": {"builder": "webdataset", "shards": str(tmp_path / "shards")}}))
    first, last = sorted((tmp_path / "shards").glob("*.tar"))[::2]
    assert (f"dataset 'stream': webdataset stream of 3 shard(s) from '{first}' ... '{last}' (shuffle buffer 1000, "
            "repeating)") in caplog.text


def test_every_wrong_path_of_an_evaluation_is_listed_at_once(tiny_assets, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {{variant: tiny, ckpt: {tmp_path / 'gone.pth'}}}\n"
                      f"evaluation:\n  cases: {tmp_path / 'no_cases'}\n"
                      f"  ablation: {{checkpoints: {{step1_only: {tmp_path / 's1.pth'}}}}}\n")
    assert evaluate_main(["--cfg-path", str(config), "--task", "ablation", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 3 paths in the config need fixing: (1) config key 'model.ckpt': no such file")
    assert "(2) config key 'evaluation.cases': no such" in err
    assert "(3) config key 'evaluation.ablation.checkpoints.step1_only': no such file" in err
    assert len(err.splitlines()) == 1
