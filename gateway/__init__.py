"""GLM Gateway: one OpenAI-compatible endpoint over Cerebras keys and GLM fallbacks."""

__version__ = "0.1.0"
