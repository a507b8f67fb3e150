"""The one class table (`classes.json` beside this file; docs/datasets.md): the paper's 15 diagnosis classes +
Others, each with its patient-friendly phrase, the synonyms that name it in free text and the Dermnet folders that
feed it; the step-2 caption sentences; the negation cues. Data preparation writes training captions from it, the
evaluation reads answers with it, and the differential scores its sentences."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from skingpt4.common.tables import read_named_entries

CLASS_TABLE = Path(__file__).resolve().parent / "classes.json"


class ClassTableError(ValueError):
    """A class table that cannot be used; the message names the file and the problem."""


def read_class_table(path: Optional[str | Path] = None) -> dict[str, Any]:
    path = Path(path) if path else CLASS_TABLE
    table = read_named_entries(path, "class", "classes", ("name", "phrase", "synonyms"), ClassTableError)
    for key in ("caption", "negation"):
        if key not in table:
            raise ClassTableError(f"class table '{path}' lacks '{key}'")
    for caption in [table["caption"], *table.get("varied_captions", [])]:
        if "{phrase}" not in caption:
            raise ClassTableError(f"class table '{path}': every caption must contain {{phrase}}, got {caption!r}")
    return table


def class_sentence(table: dict[str, Any], name: str, caption: Optional[str] = None) -> str:
    """The step-2 caption of a class ("This looks like acne or rosacea.")."""
    phrase = next(c["phrase"] for c in table["classes"] if c["name"] == name)
    return (caption or table["caption"]).format(phrase=phrase)


def dermnet_mapping(path: Optional[str | Path] = None) -> dict[str, Any]:
    """The Dermnet part of a class table (skingpt4/common/classes.json or an edited copy): the captions, each
    class's phrase, every known folder -> its class, and the folders the paper does not place (-> Others)."""
    path = Path(path) if path else CLASS_TABLE
    table = read_class_table(path)
    classes = {c["name"]: c["phrase"] for c in table["classes"]}
    folders: dict[str, Optional[str]] = {}
    for c in table["classes"]:
        for folder in c.get("dermnet_folders", []):
            if folder in folders:
                raise ClassTableError(f"class table '{path}': folder {folder!r} is placed in two classes "
                                      f"({folders[folder]}, {c['name']})")
            folders[folder] = c["name"]
    ambiguous = list(table.get("unplaced_dermnet_folders", []))
    if ambiguous and "Others" not in classes:
        raise ClassTableError(f"class table '{path}': unplaced Dermnet folders go to 'Others', which is not a class")
    for key, target in (("unplaced_dermnet_folders", "Others"), ("dropped_dermnet_folders", None)):
        for folder in table.get(key, []):
            if folder in folders:
                raise ClassTableError(f"class table '{path}': folder {folder!r} is in '{key}' and also "
                                      f"{'placed in ' + folders[folder] if folders[folder] else 'dropped'}")
            folders[folder] = target
    return {"caption": table["caption"], "varied_captions": table.get("varied_captions", []), "classes": classes,
            "folders": folders, "ambiguous": ambiguous}
