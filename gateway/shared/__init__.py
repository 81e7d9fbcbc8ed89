"""State several gateway replicas share.

``REDIS_URL`` set: upstream key state (rests, disabled keys, breaker openings, reported remaining
tokens) and spend (client budgets and rate-limit minutes, provider caps) go through Redis (:class:`RedisShared`);
``wire`` is the pure part (Redis key names, messages, merging a replica's news into local state).
Unset: each process keeps its own, as before.
"""
from .redis_state import RedisShared

__all__ = ["RedisShared"]
