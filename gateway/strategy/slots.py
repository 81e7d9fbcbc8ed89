"""How many requests the local llama.cpp server decodes at once: ``total_slots`` of its
``GET /props`` (its ``--parallel``), read through the app's upstream HTTP client."""
from __future__ import annotations

from typing import Any

import aiohttp
import orjson

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


async def read_slots(
    session: aiohttp.ClientSession, base_url: str, secret: str = "", wait: float = PROPS_TIMEOUT
) -> int | None:
    """The server's slots, or None when it cannot be asked or does not say."""
    headers = {"Accept": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    try:
        async with session.get(props_url(base_url), headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=wait)) as resp:
            if resp.status != 200:
                return None
            body = await resp.content.read(PROPS_BYTES)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    try:
        return total_slots(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None
