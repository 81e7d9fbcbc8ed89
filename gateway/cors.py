"""CORS for browser clients: which origins may call the API, and the answer to their preflights.

``CORS_ORIGINS`` lists the allowed origins (``https://app.example.com,http://localhost:5173``) or
``*`` for any; unset, the gateway sends no CORS headers at all. A request whose ``Origin`` is
allowed gets ``Access-Control-Allow-Origin`` and the exposed headers on its response; a preflight
(``OPTIONS`` with ``Access-Control-Request-Method``) on a route the gateway serves is answered here,
before auth (browsers send preflights without the key). Any other origin gets no CORS headers, so
the browser keeps the answer from the page.

A small hook in the middleware rather than aiohttp-cors: aiohttp-cors wraps each route and adds an
OPTIONS route per resource, which would pass preflights through the auth step and the 405 path; the
policy here is a few dictionary lookups the middleware does only when an ``Origin`` header is present.
No credentials mode: the gateway's keys travel in ``Authorization``, never in cookies.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web

ANY = "*"
# what an SDK in a browser sends: the key, the body type, our request id, the OpenAI SDK's
# x-stainless-* and OpenAI-* headers; a preflight's own list is echoed as well (see preflight_headers)
ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-Id", "x-api-key")
EXPOSE_HEADERS = ("X-Request-Id, X-Gateway-Provider, X-Gateway-Repairs, X-Gateway-Overhead-Ms, "
                  "Retry-After, retry-after-ms, x-should-retry")
MAX_AGE = "600"  # seconds a browser may cache a preflight answer
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origins(raw: str) -> tuple[str, ...]:
    """``CORS_ORIGINS`` -> the normalised origins, ``("*",)``, or ``()`` (none). Raises ValueError
    naming the bad entry. An origin is ``scheme://host[:port]``, as browsers send it: no path, no
    query; a trailing slash and a default port are dropped, scheme and host lowercased. (Pure.)"""
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if entries == [ANY]:
        return (ANY,)
    if ANY in entries:
        raise ValueError("'*' allows every origin and cannot be combined with others")
    out: dict[str, None] = {}
    for entry in entries:
        out[normalise_origin(entry)] = None
    return tuple(out)


def normalise_origin(entry: str) -> str:
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError:
        raise ValueError(f"{entry!r} is not an origin (scheme://host[:port])") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{entry!r} is not an origin: expected http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{entry!r} is not an origin: an origin has no path, query or user (scheme://host[:port])")
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


class CorsPolicy:
    """The allowed origins and the headers each allowed request's response carries."""

    def __init__(self, origins: Iterable[str]) -> None:
        origins = tuple(origins)
        self.any = origins == (ANY,)
        # one ready dict per allowed origin: a request costs a lookup, not a build
        self._headers: dict[str, dict[str, str]] = {
            o: {"Access-Control-Allow-Origin": o, "Access-Control-Expose-Headers": EXPOSE_HEADERS, "Vary": "Origin"}
            for o in origins if o != ANY
        }
        self._any_headers = {"Access-Control-Allow-Origin": ANY, "Access-Control-Expose-Headers": EXPOSE_HEADERS}

    def headers_for(self, origin: str) -> dict[str, str] | None:
        """The CORS headers for a response to ``origin``; None if that origin is not allowed."""
        if self.any:
            return self._any_headers
        return self._headers.get(origin)


def preflight_headers(allowed_methods: Iterable[str], requested_headers: str | None) -> dict[str, str]:
    """The preflight answer's own headers (pure). The requested headers are echoed when they are
    header names: the gateway ignores headers it does not know, and the SDKs' x-stainless-* set
    changes between versions, so a fixed list would break browsers for no protection."""
    names = list(ALLOW_HEADERS)
    if requested_headers:
        known = {n.lower() for n in names}
        for name in requested_headers.split(",")[:64]:
            name = name.strip()
            if _HEADER_NAME.match(name) and name.lower() not in known:
                known.add(name.lower())
                names.append(name)
    methods = sorted({*allowed_methods, "OPTIONS"})
    return {
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Allow-Headers": ", ".join(names),
        "Access-Control-Max-Age": MAX_AGE,
    }


def apply(policy: CorsPolicy, request: web.Request) -> tuple[dict[str, str] | None, web.Response | None]:
    """For a request carrying ``Origin``: the CORS headers its response gets (None: origin not
    allowed), and the preflight answer when this is a preflight for a route the gateway serves."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None, None
    headers = policy.headers_for(origin)
    if headers is None or request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return headers, None
    problem = request.match_info.http_exception
    if isinstance(problem, web.HTTPMethodNotAllowed):  # the path exists; OPTIONS itself is not a route
        allowed: Iterable[str] = problem.allowed_methods
    elif problem is None:
        allowed = (request.method,)
    else:
        return headers, None  # no such route: the usual 404
    answer = web.Response(status=204, headers=preflight_headers(allowed, request.headers.get(
        "Access-Control-Request-Headers")))
    return headers, answer
