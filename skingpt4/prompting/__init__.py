"""Prompting: the chat templates (registered in `registry.chat_templates`, the one description of the prompt
format), the token layout used by training and chat, segment tokenization, training prompt files and the
clinical prompts. See docs/prompts.md."""
from skingpt4.prompting.clinical import CLINICAL_PROMPTS, CONCEPT_PROMPT  # noqa: F401
from skingpt4.prompting.layout import IGNORE_INDEX, IMAGE_SLOT, Layout, layout  # noqa: F401
from skingpt4.prompting.templates import IMAGE_PLACEHOLDER, IMAGE_TAG, ChatTemplate  # noqa: F401 (registers)

__all__ = ["CLINICAL_PROMPTS", "CONCEPT_PROMPT", "ChatTemplate", "IGNORE_INDEX", "IMAGE_PLACEHOLDER", "IMAGE_SLOT",
           "IMAGE_TAG", "Layout", "layout"]
