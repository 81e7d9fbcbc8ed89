"""How many requests the local llama.cpp server decodes at once: ``total_slots`` of its
``GET /props`` (its ``--parallel``), read through the app's upstream HTTP client."""
from __future__ import annotations

from typing import Any

import orjson

from ..httpclient import Endpoint, HTTPClient, HTTPError, encode_headers

PROPS_TIMEOUT = 2.0
PROPS_BYTES = 1024 * 1024  # /props holds the chat template: tens of KB


def props_url(base_url: str) -> str:
    """llama.cpp serves /props at its root, beside /v1 (``http://h:8080/v1`` -> ``http://h:8080/props``)."""
    root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    return root + "/props"


def total_slots(props: Any) -> int | None:
    """``total_slots`` of a /props answer, or None when it holds no sane one (pure)."""
    value = props.get("total_slots") if isinstance(props, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


async def read_slots(client: HTTPClient, base_url: str, secret: str = "", wait: float = PROPS_TIMEOUT) -> int | None:
    """The server's slots, or None when it cannot be asked or does not say."""
    headers = {"Accept": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    try:
        resp = await client.request(Endpoint.parse(props_url(base_url), "GET"), encode_headers(headers), b"",
                                    connect_timeout=wait, read_timeout=wait, total_timeout=wait)
        try:
            body = await resp.read(PROPS_BYTES)
        finally:
            resp.close()
    except (HTTPError, ValueError):
        return None
    if resp.status != 200:
        return None
    try:
        return total_slots(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None
