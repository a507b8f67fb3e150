"""SKINCON's 48 clinical concepts (column names of the public CSVs, docs/datasets.md) and how captions name them.

Wording: concept names in clinical spelling (lower case, US spelling, "/" columns read as "or"), listed in
the order of the released header, joined as "a, b and c". The default sentence is
"This lesion shows erythema, plaque and scale."; `--phrasings varied` picks one of VARIED_TEMPLATES per
image from a hash of its id (deterministic).
"""
from __future__ import annotations

# Column name -> wording in captions. Order = the released header's order (docs/datasets.md).
CONCEPTS: dict[str, str] = {
    "Vesicle": "vesicles",
    "Papule": "papules",
    "Macule": "macules",
    "Plaque": "plaque",
    "Abscess": "an abscess",
    "Pustule": "pustules",
    "Bulla": "bullae",
    "Patch": "a patch",
    "Nodule": "a nodule",
    "Ulcer": "ulceration",
    "Crust": "crust",
    "Erosion": "erosion",
    "Excoriation": "excoriation",
    "Atrophy": "atrophy",
    "Exudate": "exudate",
    "Purpura/Petechiae": "purpura or petechiae",
    "Fissure": "fissures",
    "Induration": "induration",
    "Xerosis": "xerosis",
    "Telangiectasia": "telangiectasia",
    "Scale": "scale",
    "Scar": "scarring",
    "Friable": "friable skin",
    "Sclerosis": "sclerosis",
    "Pedunculated": "a pedunculated lesion",
    "Exophytic/Fungating": "an exophytic or fungating growth",
    "Warty/Papillomatous": "a warty or papillomatous surface",
    "Dome-shaped": "a dome-shaped lesion",
    "Flat topped": "flat-topped lesions",
    "Brown(Hyperpigmentation)": "brown hyperpigmentation",
    "Translucent": "a translucent surface",
    "White(Hypopigmentation)": "white hypopigmentation",
    "Purple": "purple color",
    "Yellow": "yellow color",
    "Black": "black color",
    "Erythema": "erythema",
    "Comedo": "comedones",
    "Lichenification": "lichenification",
    "Blue": "blue color",
    "Umbilicated": "umbilication",
    "Poikiloderma": "poikiloderma",
    "Salmon": "salmon color",
    "Wheal": "wheals",
    "Acuminate": "acuminate (pointed) papules",
    "Burrow": "burrows",
    "Gray": "gray color",
    "Pigmented": "pigmentation",
    "Cyst": "a cyst",
}
EXCLUDE_COLUMN = "Do not consider this image"
DEFAULT_TEMPLATE = "This lesion shows {}."
VARIED_TEMPLATES = (
    "This lesion shows {}.",
    "The skin in this image shows {}.",
    "In this image I can see {}.",
    "Clinically, this lesion has {}.",
    "The visible features of this lesion are {}.",
)


def join_words(words: list[str]) -> str:
    """['a'] -> 'a'; ['a', 'b'] -> 'a and b'; ['a', 'b', 'c'] -> 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def concept_caption(concepts: list[str], template: str = DEFAULT_TEMPLATE) -> str:
    """Column names (any order) -> a sentence naming them in header order."""
    ordered = [c for c in CONCEPTS if c in concepts]
    return template.format(join_words([CONCEPTS[c] for c in ordered]))
