"""TLS for tests: a throwaway CA (trustme), a server context holding one of its certificates, and
a client context that trusts it."""
from __future__ import annotations

import ssl

import trustme


def server_context(ca: trustme.CA, host: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(ctx)
    return ctx


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx
