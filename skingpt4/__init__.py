"""SkinGPT-4: a frozen EVA-ViT-g + BLIP-2 Q-Former read a skin photo, a trainable linear projection maps the
32 query embeddings into a frozen Llama-family LLM. Importing the package registers every model, processor,
dataset builder, task, runner, LR schedule and chat template, so YAML can name them."""
import os

# Nothing in this project downloads: weights and data come from local paths named in YAML.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from skingpt4 import conversation, datasets, models, processors, runners, tasks  # noqa: E402,F401  (registration)

__version__ = "0.1.0"
