"""Anthropic's Messages API on top of the chat-completions chain: pure translation both ways
(``translate``), the stream's event machine (``stream``), ``count_tokens`` (``count``) and
Anthropic-shaped errors (``errors``). The routes are in ``gateway.api.anthropic``."""
