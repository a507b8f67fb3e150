"""Prompt files: one prompt a line. The project's own ship with the package in skingpt4/prompting/prompts/
(docs/prompts.md): `step1.txt` and `step2.txt` (training prompt lines, each carrying `<Img><ImageHere></Img>`; lines
without `<ImageHere>` are skipped, as the original does) and `clinical.txt` (the paper's four clinical prompts, in
the order they are asked). A config names one as `prompts/step1.txt`; any other path is a file of the user's.

Each training item gets a line drawn with its own seed, so the prompt of every sample is reproducible, survives a
resume and does not depend on how many processes share the batch."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Optional, Sequence

from skingpt4.common.config import ConfigError, require_path
from skingpt4.prompting.templates import IMAGE_PLACEHOLDER, IMAGE_TAG

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PROMPT_FILE_WHAT = "a text file with one prompt per line (the project's: prompts/step1.txt, prompts/step2.txt)"


def resolve_prompt_path(path: str | os.PathLike) -> Path:
    """A user's file as given (absolute, or relative to the working directory); else `prompts/<name>` names a file
    shipped in skingpt4/prompting/prompts/."""
    file = Path(os.path.expanduser(str(path)))
    if file.is_absolute() or file.exists():
        return file
    packaged = PROMPTS_DIR.parent / file
    return packaged if packaged.is_file() else file


def packaged_lines(name: str) -> list[str]:
    """The non-empty lines of a prompt file shipped with the package (`clinical.txt`, ...)."""
    lines = (PROMPTS_DIR / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def read_prompt_lines(path: Optional[str], key: str = "run.prompt_path") -> list[str]:
    """The training prompt lines of `path` (those carrying the image placeholder); [] for no file."""
    if not path:
        return []
    file = require_path(str(resolve_prompt_path(path)), key, PROMPT_FILE_WHAT, "file")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if IMAGE_PLACEHOLDER in line]
    if not prompts:
        raise ConfigError(f"{key} '{path}' has no line containing {IMAGE_TAG}")
    return prompts


def question_of(prompt_line: str) -> str:
    """A training prompt line without its image tag: the question as a chat user asks it."""
    return prompt_line.replace(IMAGE_TAG, "").strip()


def draw_prompts(lines: Sequence[str], item_seeds: Sequence[int],
                 given: Optional[Sequence[Optional[str]]] = None) -> Optional[list[Optional[str]]]:
    """One prompt line per item (a dataset's own prompt wins); None when there are neither lines nor given ones."""
    if not lines:
        return None if given is None else list(given)
    drawn = [random.Random(seed).choice(lines) for seed in item_seeds]
    if given is None:
        return drawn
    return [g if g is not None else d for g, d in zip(given, drawn)]
