"""Models: SkinGPT-4 and the builders/converters of its parts."""
from skingpt4.models.skin_gpt4 import SkinGPT4, model_config  # noqa: F401  (registers "skin_gpt4")
