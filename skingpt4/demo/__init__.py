"""The private, local Gradio demo (`python demo.py`)."""
