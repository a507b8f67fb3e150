"""Read a diagnosis class (or SKINCON concepts) out of a free-text answer.

The words that name each class live in the one class table, `skingpt4/common/classes.json` (concepts: `skingpt4/common/concepts.json`).
Rule, applied to every answer:
  1. The text is lower-cased, hyphens/slashes read as spaces, and split into words and punctuation.
  2. Synonyms are matched on whole words, left to right, the longest synonym winning where two start at
     the same word ("seborrheic keratosis" -> Benign tumors, not a bare "keratosis"); a final "s" is
     optional. Matches never overlap.
  3. A mention is *negated* (NegEx-style) when, in the same clause, a "before" cue ("not", "no evidence
     of", "rather than", ...) ends at most `window` words before it, or an "after" cue ("is unlikely",
     "ruled out", ...) starts at most `window` words after it with no other mention in between.
     Clauses end at . , ; : ! ? and at words such as "but" / "however". Pseudo-cues that only look
     negative ("cannot be ruled out", "not only") are removed first.
  4. The diagnosis is the class of the FIRST non-negated mention (answers lead with their diagnosis and
     list differentials after it); every non-negated class is also returned, in order of first mention.
     No non-negated mention -> "unknown".
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from skingpt4.common.class_table import CLASS_TABLE
from skingpt4.common.concept_table import CONCEPT_TABLE

UNKNOWN = "unknown"
CLASS_FILE = CLASS_TABLE  # the one class table (skingpt4/common/classes.json)
CONCEPT_FILE = CONCEPT_TABLE  # the one concept table (skingpt4/common/concepts.json)

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,;:!?]")
_PUNCT = frozenset(".,;:!?")


def tokenize(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"[-_/()\[\]]", " ", text)
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Mention:
    label: str        # class (or concept) name
    words: str        # the matched words, normalised
    position: int     # index of its first word in the tokenised answer
    negated: bool


@dataclass(frozen=True)
class Extraction:
    label: str                 # the diagnosis: first non-negated class, or "unknown"
    classes: tuple[str, ...]   # every non-negated class, in order of first mention
    mentions: tuple[Mention, ...]


@dataclass(frozen=True)
class NegationRules:
    before: tuple[tuple[str, ...], ...]
    after: tuple[tuple[str, ...], ...]
    pseudo: tuple[tuple[str, ...], ...]
    clause_breaks: frozenset[str]
    window: int

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "NegationRules":
        missing = {"before", "after", "pseudo", "clause_breaks", "window"} - set(data)
        if missing:
            raise ValueError(f"{where}: 'negation' lacks {sorted(missing)}")
        phrases = lambda key: tuple(sorted({tuple(tokenize(p)) for p in data[key]}, key=len, reverse=True))
        return cls(before=phrases("before"), after=phrases("after"), pseudo=phrases("pseudo"),
                   clause_breaks=frozenset(w.lower() for w in data["clause_breaks"]), window=int(data["window"]))


class TermMatcher:
    """Finds labelled terms (class or concept synonyms) in text and decides which mentions are negated."""

    def __init__(self, terms: dict[str, Sequence[str]], negation: NegationRules, where: str = "terms"):
        self.labels = list(terms)
        self.negation = negation
        owner: dict[tuple[str, ...], str] = {}
        for label, synonyms in terms.items():
            if not synonyms:
                raise ValueError(f"{where}: '{label}' has no synonyms")
            for synonym in synonyms:
                words = tuple(tokenize(synonym))
                if not words or any(w in _PUNCT for w in words):
                    raise ValueError(f"{where}: synonym {synonym!r} of '{label}' is empty or has punctuation")
                if owner.get(words, label) != label:
                    raise ValueError(f"{where}: synonym {synonym!r} is listed under both '{owner[words]}' "
                                     f"and '{label}'")
                owner[words] = label
        self._terms = _by_first_word(owner)

    def find(self, text: str) -> list[Mention]:
        tokens = tokenize(text)
        clause = _clause_ids(tokens, self.negation.clause_breaks)
        masked = [False] * len(tokens)
        for start, end, _ in _scan(tokens, _by_first_word({p: None for p in self.negation.pseudo}), plural=False):
            masked[start:end] = [True] * (end - start)
        before = [(s, e) for s, e, _ in _scan(tokens, _by_first_word({p: None for p in self.negation.before}), False)
                  if not any(masked[s:e])]
        after = [(s, e) for s, e, _ in _scan(tokens, _by_first_word({p: None for p in self.negation.after}), False)
                 if not any(masked[s:e])]
        found = list(_scan(tokens, self._terms, plural=True))
        window = self.negation.window
        mentions = []
        for i, (start, end, label) in enumerate(found):
            next_start = found[i + 1][0] if i + 1 < len(found) else len(tokens)
            negated = any(e <= start and start - e <= window and clause[s] == clause[start] for s, e in before) or any(
                s >= end and s - end <= window and s < next_start and clause[s] == clause[start] for s, _ in after)
            mentions.append(Mention(label, " ".join(tokens[start:end]), start, negated))
        return mentions


class ClassExtractor:
    """`extract(answer) -> Extraction` for the 15 classes + Others of the paper (see module docstring)."""

    def __init__(self, class_file: Optional[str | Path] = None):
        self.path = Path(class_file) if class_file else CLASS_FILE
        data = _read_json(self.path)
        classes = data.get("classes")
        if not isinstance(classes, list) or not classes:
            raise ValueError(f"{self.path}: expected a non-empty 'classes' list")
        names = [c["name"] for c in classes]
        if len(set(names)) != len(names) or UNKNOWN in names:
            raise ValueError(f"{self.path}: class names must be unique and not '{UNKNOWN}': {names}")
        self.classes = names
        self.matcher = TermMatcher({c["name"]: c["synonyms"] for c in classes},
                                   NegationRules.from_dict(data["negation"], str(self.path)), str(self.path))
        self.dermnet_folders = {folder: c["name"] for c in classes for folder in c.get("dermnet_folders", [])}
        self.unplaced_dermnet_folders = list(data.get("unplaced_dermnet_folders", []))
        self.negation = self.matcher.negation

    def extract(self, answer: str) -> Extraction:
        mentions = self.matcher.find(answer)
        affirmed = list(dict.fromkeys(m.label for m in mentions if not m.negated))
        return Extraction(affirmed[0] if affirmed else UNKNOWN, tuple(affirmed), tuple(mentions))

    def label_for_folder(self, folder: str, unplaced_as: Optional[str] = "Others") -> Optional[str]:
        """Dermnet folder name (or a class name) -> class name. Folders the paper does not place
        (`unplaced_dermnet_folders`) map to `unplaced_as` (None = drop them). Unknown names raise."""
        if folder in self.dermnet_folders:
            return self.dermnet_folders[folder]
        if folder in self.classes:
            return folder
        if folder in self.unplaced_dermnet_folders:
            return unplaced_as
        raise ValueError(f"'{folder}' is neither one of the classes ({', '.join(self.classes)}) nor a Dermnet "
                         f"folder listed in {self.path}")

    def canonical(self, label: str, unplaced_as: Optional[str] = "Others") -> Optional[str]:
        """A label as written in a cases CSV -> class name: the class name in any letter case, or a Dermnet
        folder (see `label_for_folder`)."""
        for name in self.classes:
            if label.strip().lower() == name.lower():
                return name
        return self.label_for_folder(label.strip(), unplaced_as)


class ConceptExtractor:
    """`extract(description) -> list of SKINCON concepts mentioned (not negated)`, same rules as classes."""

    def __init__(self, concept_file: Optional[str | Path] = None, class_file: Optional[str | Path] = None):
        self.path = Path(concept_file) if concept_file else CONCEPT_FILE
        data = _read_json(self.path)
        negation = NegationRules.from_dict(_read_json(Path(class_file) if class_file else CLASS_FILE)["negation"],
                                           "negation")
        self.concepts = [c["name"] for c in data["concepts"]]
        self.matcher = TermMatcher({c["name"]: c["synonyms"] for c in data["concepts"]}, negation, str(self.path))

    def extract(self, description: str) -> list[str]:
        return list(dict.fromkeys(m.label for m in self.matcher.find(description) if not m.negated))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"class/concept data file not found: '{path}'") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"could not parse '{path}': {err}") from err


def _by_first_word(phrases: dict) -> dict[str, list[tuple[tuple[str, ...], object]]]:
    index: dict[str, list] = {}
    for words, label in phrases.items():
        index.setdefault(words[0], []).append((words, label))
    for entries in index.values():
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)  # longest first
    return index


def _scan(tokens: list[str], index: dict, plural: bool):
    """Yield (start, end, label) of non-overlapping longest matches, left to right."""
    i = 0
    while i < len(tokens):
        for words, label in _candidates(tokens[i], index, plural):
            end = i + len(words)
            if end <= len(tokens) and _words_match(tokens[i:end], words, plural):
                yield i, end, label
                i = end
                break
        else:
            i += 1


def _candidates(token: str, index: dict, plural: bool):
    entries = list(index.get(token, ()))
    if plural and token.endswith("s"):
        entries += index.get(token[:-1], ())  # a one-word synonym in the plural
    return sorted(entries, key=lambda entry: len(entry[0]), reverse=True)


def _words_match(tokens: list[str], words: tuple[str, ...], plural: bool) -> bool:
    if tokens[:-1] != list(words[:-1]):
        return False
    last = tokens[-1]
    return last == words[-1] or (plural and last == words[-1] + "s")


def _clause_ids(tokens: list[str], breaks: frozenset[str]) -> list[int]:
    ids, clause = [], 0
    for token in tokens:
        if token in _PUNCT or token in breaks:
            clause += 1
        ids.append(clause)
    return ids
