"""The class extractor on written answers: synonyms, plurals, negations, several classes in one answer."""
import json
from pathlib import Path

import pytest

from skingpt4.evaluation.extract import UNKNOWN, ClassExtractor, ConceptExtractor, tokenize

REPO_ROOT = Path(__file__).resolve().parents[1]
MEL = "Melanoma skin cancer, nevi, moles"


@pytest.fixture(scope="module")
def extractor():
    return ClassExtractor()


def test_data_file_has_the_papers_15_classes_plus_others(extractor):
    assert len(extractor.classes) == 16 and extractor.classes[-1] == "Others"
    assert extractor.classes[0] == "Acne and rosacea" and MEL in extractor.classes
    # every Dermnet folder of docs/datasets.md is placed, or listed as not placeable
    assert len(extractor.dermnet_folders) + len(extractor.unplaced_dermnet_folders) == 23
    assert extractor.label_for_folder("Lupus and other Connective Tissue diseases") == "Connective tissue diseases"
    assert extractor.label_for_folder("Vasculitis Photos") == "Others"
    assert extractor.label_for_folder("Vasculitis Photos", unplaced_as=None) is None


@pytest.mark.parametrize("answer, label", [
    ("This appears to be melanoma.", MEL),
    ("It looks like a benign mole.", MEL),
    ("Multiple Moles on the back.", MEL),                             # plural, capitals
    ("Findings are typical of Atopic Dermatitis.", "Dermatitis"),
    ("A seborrheic keratosis.", "Benign tumors"),                      # longest synonym wins over "keratosis"
    ("Non-melanoma skin cancer such as BCC.", "Malignant lesions"),    # hyphen; not melanoma
    ("Dermatitis herpetiformis with itchy vesicles.", "Bullous disease"),
    ("Classic ringworm (tinea corporis).", "Fungal infections"),
    ("Hives after eating shellfish.", "Urticaria hives"),
    ("Insect bites on the ankle.", "Infestations and bites"),
    ("A cherry angioma.", "Vascular tumors"),
    ("Shingles along a dermatome.", "Herpes"),
    ("Patchy hair loss: alopecia areata.", "Others"),
    ("The image shows a red area of skin.", UNKNOWN),
    ("", UNKNOWN),
])
def test_synonyms(extractor, answer, label):
    assert extractor.extract(answer).label == label


@pytest.mark.parametrize("answer, label", [
    ("This is not melanoma.", UNKNOWN),
    ("This is not melanoma; it is a seborrheic keratosis.", "Benign tumors"),
    ("It does not look like melanoma.", UNKNOWN),
    ("There is no evidence of psoriasis.", UNKNOWN),
    ("Melanoma is unlikely.", UNKNOWN),
    ("Melanoma has been ruled out, the lesion is a dermatofibroma.", "Benign tumors"),
    ("It is not eczema but psoriasis.", "Psoriasis and lichen planus"),
    ("This looks like psoriasis rather than eczema.", "Psoriasis and lichen planus"),
    ("Neither eczema nor psoriasis; likely tinea.", "Fungal infections"),
    ("Melanoma cannot be ruled out.", MEL),                    # pseudo-negation: still named
    ("This is eczema and melanoma is unlikely.", "Dermatitis"),  # an after-cue negates only the nearest mention
])
def test_negations(extractor, answer, label):
    assert extractor.extract(answer).label == label


def test_several_classes_first_affirmed_wins_and_all_are_listed(extractor):
    e = extractor.extract("Most likely eczema; differential diagnoses include psoriasis, not melanoma, and tinea.")
    assert e.label == "Dermatitis"
    assert e.classes == ("Dermatitis", "Psoriasis and lichen planus", "Fungal infections")
    negated = [m.label for m in e.mentions if m.negated]
    assert negated == [MEL]
    e = extractor.extract("Eczema or psoriasis; eczema is more common.")
    assert e.classes == ("Dermatitis", "Psoriasis and lichen planus")  # each class listed once


def test_tokenize_normalises_case_hyphens_and_apostrophes():
    assert tokenize("Kaposi\u2019s sarcoma, non-melanoma!") == ["kaposi's", "sarcoma", ",", "non", "melanoma", "!"]


def test_a_synonym_under_two_classes_is_an_error(tmp_path):
    data = json.loads(ClassExtractor().path.read_text())
    data["classes"][0]["synonyms"].append("psoriasis")
    bad = tmp_path / "classes.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'psoriasis' is listed under both 'Acne and rosacea' and 'Psoriasis"):
        ClassExtractor(bad)


def test_unknown_label_names_the_valid_ones(extractor):
    with pytest.raises(ValueError, match="'Psoriazis' is neither one of the classes"):
        extractor.canonical("Psoriazis")
    assert extractor.canonical(" psoriasis and LICHEN planus ") == "Psoriasis and lichen planus"


def test_concepts_with_negation():
    concepts = ConceptExtractor()
    assert len(concepts.concepts) == 48
    said = concepts.extract("A red, scaly plaque with crusting, no ulceration, and brownish papules.")
    assert said == ["Erythema", "Scale", "Plaque", "Crust", "Brown(Hyperpigmentation)", "Papule"]


def test_agrees_with_the_dermnet_preparation_mapping(extractor):
    """The preparation's view of the one class table places folders and writes the step-2 training captions:
    the extractor must place every folder the same way and read every caption back to its class."""
    from data_prep.prepare_dermnet import load_mapping

    mapping = load_mapping()
    for folder, label in mapping["folders"].items():
        assert extractor.label_for_folder(folder) == label, folder
    for label, phrase in mapping["classes"].items():
        for template in [mapping["caption"], *mapping["varied_captions"]]:
            assert extractor.extract(template.format(phrase=phrase)).label == label, (label, template)
