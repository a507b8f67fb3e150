"""SkinGPT-4: a frozen EVA-ViT-g + BLIP-2 Q-Former read a skin photo, a trainable linear projection maps the
32 query embeddings into a frozen Llama-family LLM. Models, processors, dataset builders, tasks, runners, LR
schedules and chat templates are named in YAML through `skingpt4.common.registry`, which imports the package
that defines them on first look-up."""
import os

# Nothing in this project downloads: weights and data come from local paths named in YAML.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__version__ = "0.1.0"
