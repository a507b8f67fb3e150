"""Export to a standard transformers BLIP-2 directory (`python -m skingpt4.export`), the prompt helpers for it
and for serving it with vLLM (docs/scaling.md)."""
from skingpt4.export.blip2 import ExportError, ExportReport, export_blip2, read_export_info  # noqa: F401
from skingpt4.export.prompt import (IMAGE_TOKEN, blip2_input_ids, blip2_prompt_text,  # noqa: F401
                                    chat_template_jinja, served_prompt_text)

__all__ = ["ExportError", "ExportReport", "IMAGE_TOKEN", "blip2_input_ids", "blip2_prompt_text",
           "chat_template_jinja", "export_blip2", "read_export_info", "served_prompt_text"]
