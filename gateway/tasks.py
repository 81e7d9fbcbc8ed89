"""Small asyncio helpers shared by the app's lifetimes and the local model's supervisor."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (its CancelledError is not ours to raise)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
