"""Training prompt files (prompts/*.txt): one prompt line per line, each carrying `<Img><ImageHere></Img>`; lines
without `<ImageHere>` are skipped, as the original does (docs/prompts.md). Each training item gets a line drawn
with its own seed, so the prompt of every sample is reproducible, survives a resume and does not depend on how
many processes share the batch."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional, Sequence

from skingpt4.common.config import ConfigError, require_path
from skingpt4.prompting.templates import IMAGE_PLACEHOLDER, IMAGE_TAG

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def read_prompt_lines(path: Optional[str], key: str = "run.prompt_path") -> list[str]:
    """The prompt lines of `path` (relative paths are also looked up from the project root); [] for no file."""
    if not path:
        return []
    file = Path(path)
    if not file.is_absolute() and not file.exists():
        file = PROJECT_ROOT / file
    require_path(str(file), key, "a text file with one prompt per line (see prompts/)", "file")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if IMAGE_PLACEHOLDER in line]
    if not prompts:
        raise ConfigError(f"{key} '{path}' has no line containing {IMAGE_TAG}")
    return prompts


def draw_prompts(lines: Sequence[str], item_seeds: Sequence[int],
                 given: Optional[Sequence[Optional[str]]] = None) -> Optional[list[Optional[str]]]:
    """One prompt line per item (a dataset's own prompt wins); None when there are neither lines nor given ones."""
    if not lines:
        return None if given is None else list(given)
    drawn = [random.Random(seed).choice(lines) for seed in item_seeds]
    if given is None:
        return drawn
    return [g if g is not None else d for g, d in zip(given, drawn)]
