"""The model variants: one YAML each in skingpt4/models/variants/, discovered from the folder (no list to edit).
A new LLM family is one variant file plus, if its prompt format is new, one template registration
(docs/model.md, "Adding a variant"). What several variants share is stated once in a layer whose name starts with
`_` (`_blip2_weights.yaml`: the EVA-ViT-g and BLIP-2 paths; `_tiny_world.yaml`: the tiny world's parts), named
by the variants' `base:` like a config's."""
from __future__ import annotations

from pathlib import Path

from skingpt4.common.config import load_layers

VARIANTS_DIR = Path(__file__).parent / "variants"


def variant_files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(VARIANTS_DIR.glob("*.yaml")) if not path.stem.startswith("_")}


def describe_width(hidden: int) -> str:
    """'variant vicuna_7b' / 'variants llama2_13b_chat, vicuna_13b' / 'no known variant': who has this LLM width."""
    names = [name for name, path in variant_files().items() if load_layers(path).get("llm_hidden_size") == hidden]
    if not names:
        return "no known variant"
    return f"variant{'s' if len(names) > 1 else ''} {', '.join(names)}"
