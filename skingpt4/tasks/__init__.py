"""Tasks named in `run.task`: they build the model and datasets of a config and compute the training loss.
Importing this package registers them."""
from skingpt4.tasks.image_text_pretrain import ImageTextPretrainTask

__all__ = ["ImageTextPretrainTask"]
