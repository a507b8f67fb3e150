"""SkinGPT-4: a frozen EVA-ViT-g + BLIP-2 Q-Former read a skin photo, a trainable linear projection maps the
32 query embeddings into a frozen Llama-family LLM. Where YAML has a real choice (dataset builders, processors, LR
schedules, chat templates) it names it through `skingpt4.common.registry`, which imports the module that defines
the entries on first look-up; the model is built by `skingpt4.models.build_model`, its LLM named by a variant."""
import os

# Nothing in this project downloads: weights and data come from local paths named in YAML.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__version__ = "0.1.0"
