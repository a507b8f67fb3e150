"""Chat templates (registered in `registry.chat_templates`), stop strings and reply clean-up."""
from skingpt4.prompting.templates import IMAGE_PLACEHOLDER, IMAGE_TAG, ChatTemplate  # noqa: F401 (registers)

__all__ = ["ChatTemplate", "IMAGE_PLACEHOLDER", "IMAGE_TAG"]
