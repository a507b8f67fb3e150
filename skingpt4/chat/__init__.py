"""Chat about a skin photo: `ChatEngine` (multi-turn, KV-cache reuse, streaming, batching) and its CLI
(`python -m skingpt4.chat`)."""
from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.engine import ChatEngine, ChatInputError, Conversation, TurnReport

__all__ = ["ChatEngine", "ChatInputError", "Conversation", "DecodingConfig", "TurnReport"]
