"""The one SKINCON concept table (`concepts.json` beside this file; docs/datasets.md): the 48 clinical concepts in
the order of the released header, each with the wording that step-1 captions use and the synonyms that name it in
free text. Data preparation writes captions from it (data_prep/prepare_skincon.py), the tiny world draws and
speaks it, and the evaluation's concept recall reads answers with it.

Caption rule: concepts are named in header order, joined as "a, b and c" ("This lesion shows erythema, plaque and
scale."); `--phrasings varied` picks one of the varied captions per image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from skingpt4.common.tables import read_named_entries

CONCEPT_TABLE = Path(__file__).resolve().parent / "concepts.json"


class ConceptTableError(ValueError):
    """A concept table that cannot be used; the message names the file and the problem."""


def read_concept_table(path: Optional[str | Path] = None, need_wording: bool = False) -> dict[str, Any]:
    """The table of `path` (default: the package's). An evaluation's own table needs `name` and `synonyms` per
    concept; captions need `wording` too (`need_wording`)."""
    fields = ("name", "synonyms", "wording") if need_wording else ("name", "synonyms")
    return read_named_entries(Path(path) if path else CONCEPT_TABLE, "concept", "concepts", fields,
                              ConceptTableError)


_TABLE = read_concept_table(need_wording=True)
# Column name -> wording in captions, in the released header's order.
CONCEPTS: dict[str, str] = {c["name"]: c["wording"] for c in _TABLE["concepts"]}
EXCLUDE_COLUMN: str = _TABLE["exclude_column"]
DEFAULT_TEMPLATE: str = _TABLE["caption"]
VARIED_TEMPLATES: tuple[str, ...] = tuple(_TABLE["varied_captions"])


def join_words(words: list[str]) -> str:
    """['a'] -> 'a'; ['a', 'b'] -> 'a and b'; ['a', 'b', 'c'] -> 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def concept_caption(concepts: list[str], template: str = DEFAULT_TEMPLATE) -> str:
    """Column names (any order) -> a sentence naming them in header order."""
    ordered = [c for c in CONCEPTS if c in concepts]
    return template.format(join_words([CONCEPTS[c] for c in ordered]))
