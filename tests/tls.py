"""TLS for tests: a throwaway CA (trustme), a server context holding one of its certificates, a
client context that trusts it, and a resolver that aims a real upstream's name at a local server."""
from __future__ import annotations

import socket
import ssl

import trustme
from aiohttp.abc import AbstractResolver, ResolveResult


def server_context(ca: trustme.CA, host: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(ctx)
    return ctx


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


class Pinned(AbstractResolver):
    """Resolves ``host:port`` to 127.0.0.1:``local_port``; the URL's host still goes in SNI, the
    certificate check and the Host header. Any other name is an error: nothing leaves the machine."""

    def __init__(self, host: str, port: int, local_port: int) -> None:
        self.host, self.port, self.local_port = host, port, local_port
        self.lookups = 0

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if (host, port) != (self.host, self.port):
            raise OSError(f"test resolver: {host}:{port} is not {self.host}:{self.port}")
        self.lookups += 1
        return [ResolveResult(hostname=host, host="127.0.0.1", port=self.local_port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass
