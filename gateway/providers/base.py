"""The provider seam: two methods, and the failure every provider reports in the same terms."""
from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from ..chat import ChatRequest
from ..ratelimits import RateLimits


class Failure(enum.Enum):
    """Why an upstream call failed, in the terms routing acts on."""

    RATE_LIMITED = "rate_limited"  # this key rests; try another key / provider
    AUTH = "auth"  # 401/403: this key is disabled
    PAYMENT = "payment"  # 402: this key rests for long
    CONTEXT_LENGTH = "context_length"  # too long for this provider: try the next provider
    OVERLOADED = "overloaded"  # 503 / provider busy: try elsewhere
    SERVER = "server"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    CLIENT = "client"  # the client's own 4xx: return it unchanged, try nothing else
    MIDSTREAM = "midstream"  # broke after the first byte reached the client


@dataclass
class UpstreamError(Exception):
    kind: Failure
    message: str
    status: int | None = None
    body: bytes = b""
    content_type: str | None = None
    cooldown: float | None = None  # seconds this key must rest, when the upstream said
    cooldown_reason: str | None = None
    rate_limits: RateLimits | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)


@dataclass
class Completion:
    """A successful non-streamed upstream answer, relayed as bytes."""

    status: int
    body: bytes
    content_type: str
    rate_limits: RateLimits = field(default_factory=RateLimits)


@dataclass
class Stream:
    """An open upstream SSE stream whose status was 200. ``events`` yields whole SSE events."""

    events: AsyncIterator[bytes]
    rate_limits: RateLimits = field(default_factory=RateLimits)

    async def aclose(self) -> None:
        closer = getattr(self.events, "aclose", None)
        if closer is not None:
            await closer()


class Provider(Protocol):
    name: str

    async def chat(self, req: ChatRequest, secret: str) -> Completion:
        """POST a non-streamed chat request; raise UpstreamError on failure."""
        ...

    async def chat_stream(self, req: ChatRequest, secret: str) -> Stream:
        """Open a streamed chat request; raise UpstreamError if it fails before the first event."""
        ...
