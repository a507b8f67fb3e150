"""Models: SkinGPT-4, its parts with their key-mapping converters, weight loading and the one builder."""
from skingpt4.models.build import build_model, model_config  # noqa: F401
from skingpt4.models.skin_gpt4 import SkinGPT4, SkinGPT4Config  # noqa: F401

__all__ = ["SkinGPT4", "SkinGPT4Config", "build_model", "model_config"]
