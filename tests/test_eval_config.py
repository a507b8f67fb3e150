"""The `evaluation:` config section and the case lists (folder, CSV, prepared folder)."""
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from skingpt4.common.config import ConfigError, load_config
from skingpt4.evaluation.cases import CaseError, load_cases
from skingpt4.evaluation.config import evaluation_config
from skingpt4.prompting.clinical import CLINICAL_PROMPTS
from skingpt4.evaluation.extract import ClassExtractor

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def extractor():
    return ClassExtractor()


def test_defaults_are_the_papers_protocol():
    ev = evaluation_config(None)
    assert ev.prompts == list(CLINICAL_PROMPTS) and len(ev.prompts) == 4
    assert (ev.consistency.runs, ev.response_time.cases) == (10, 20)
    assert (ev.decoding.do_sample, ev.decoding.temperature, ev.decoding.top_p, ev.decoding.max_new_tokens) == (True, 1.0, 0.9, 300)


@pytest.mark.parametrize("section, message", [
    ({"consistency": {"rns": 3}}, "unknown key 'evaluation.consistency.rns' (did you mean 'runs'?)"),
    ({"decoding": {"top_p": 2}}, "evaluation.decoding: bad decoding settings: top_p must be in (0, 1], got 2.0"),
    ({"decoding": {"seed": 3}}, "evaluation.decoding.seed must stay unset: set evaluation.seed"),
    ({"batch_size": 0}, "evaluation.batch_size must be >= 1, got 0"),
    ({"ablation": {"task": "clinical"}}, "evaluation.ablation.task=clinical: choose metrics or consistency"),
    ({"template": "vicuna_v0"}, "unknown key 'evaluation.template'"),  # the model's variant names the template
])
def test_bad_settings_are_named(section, message):
    with pytest.raises(ConfigError) as err:
        evaluation_config(OmegaConf.create(section))
    assert message in str(err.value)


def test_chat_configs_run_section_supplies_decoding():
    cfg = load_config(REPO_ROOT / "eval_configs" / "evaluate_tiny.yaml")
    assert evaluation_config(cfg.evaluation, cfg.get("run")).decoding.max_new_tokens == 64
    run = OmegaConf.create({"decoding": {"do_sample": False, "max_new_tokens": 7, "seed": 5}})
    ev = evaluation_config(OmegaConf.create({"decoding": {"max_new_tokens": 9}}), run)
    assert ev.decoding.do_sample is False and ev.decoding.seed is None
    assert ev.decoding.max_new_tokens == 9  # the evaluation section wins


def test_folder_in_dermnet_layout_gives_labels(tmp_path, extractor):
    for rel in ("Urticaria Hives/a.jpg", "Vasculitis Photos/b.png", "loose.jpg", "Urticaria Hives/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    cases, dropped = load_cases(tmp_path, extractor)
    assert [(c.case_id, c.label) for c in cases] == [("Urticaria Hives/a", "Urticaria hives"),
                                                     ("Vasculitis Photos/b", "Others"), ("loose", None)]
    cases, dropped = load_cases(tmp_path, extractor, unplaced_as=None)
    assert [c.case_id for c in cases] == ["Urticaria Hives/a", "loose"]
    assert dropped == [{"case_id": "Vasculitis Photos/b", "reason": "Dermnet folder 'Vasculitis Photos' is not placed in a class"}]


def test_csv_cases(tmp_path, extractor):
    (tmp_path / "cases.csv").write_text("image,label,skin_type,concepts\n"
                                        "img/a.jpg,psoriasis and lichen planus,V,Scale; Plaque\n"
                                        "/abs/b.jpg,Eczema Photos,,\n")
    cases, _ = load_cases(tmp_path / "cases.csv", extractor)
    a, b = cases
    assert (a.case_id, a.image, a.label, a.skin_type, a.concepts) == (
        "img/a", tmp_path / "img" / "a.jpg", "Psoriasis and lichen planus", "V", ["Scale", "Plaque"])
    assert (b.image, b.label, b.skin_type, b.concepts) == (Path("/abs/b.jpg"), "Dermatitis", None, None)
    (tmp_path / "bad.csv").write_text("image,label\na.jpg,Psoriazis\n")
    with pytest.raises(CaseError, match=r"bad.csv:2: 'Psoriazis' is neither one of the classes"):
        load_cases(tmp_path / "bad.csv", extractor)
    (tmp_path / "dup.csv").write_text("case_id,image\nx,a.jpg\nx,b.jpg\n")
    with pytest.raises(CaseError, match="case id 'x' appears twice"):
        load_cases(tmp_path / "dup.csv", extractor)


def test_prepared_folder(tmp_path, extractor):
    records = [{"image_id": "ddi_000001", "concepts": ["Vesicle"], "skin_type": "III-IV", "caption": "..."},
               {"image_id": "derm_1", "label": "Acne and rosacea", "caption": "..."}]
    (tmp_path / "filter_cap.json").write_text(json.dumps({"annotations": records}))
    cases, _ = load_cases(tmp_path, extractor)
    assert [(c.case_id, c.image.name, c.label, c.skin_type, c.concepts) for c in cases] == [
        ("ddi_000001", "ddi_000001.jpg", None, "III-IV", ["Vesicle"]), ("derm_1", "derm_1.jpg", "Acne and rosacea", None, None)]


def test_label_from_diagnosis_for_fitzpatrick_and_ddi(tmp_path, extractor):
    """SKINCON preparation keeps Fitzpatrick17k / DDI fine-grained diagnoses; their class gives labels, so the
    skin-type stratified metrics can run on them."""
    records = [{"image_id": "f1", "diagnosis": "basal cell carcinoma", "skin_type": "VI", "concepts": ["Papule"]},
               {"image_id": "d1", "diagnosis": "melanoma-in-situ", "skin_type": "I-II"},
               {"image_id": "d2", "diagnosis": "neutrophilic dermatoses", "skin_type": "V-VI"}]
    (tmp_path / "filter_cap.json").write_text(json.dumps({"annotations": records}))
    cases, dropped = load_cases(tmp_path, extractor, label_from_diagnosis=True)
    assert [(c.case_id, c.label, c.skin_type) for c in cases] == [
        ("f1", "Malignant lesions", "VI"), ("d1", "Melanoma skin cancer, nevi, moles", "I-II")]
    assert dropped == [{"case_id": "d2", "reason": "diagnosis 'neutrophilic dermatoses' names none of the classes"}]
    cases, dropped = load_cases(tmp_path, extractor)  # off by default: no labels, nothing dropped
    assert [c.label for c in cases] == [None, None, None] and dropped == []


def test_unusable_case_source(tmp_path, extractor):
    with pytest.raises(CaseError, match="is neither a folder of images"):
        load_cases(tmp_path / "nothing.txt", extractor)
    with pytest.raises(CaseError, match="holds no cases"):
        load_cases(tmp_path, extractor)
