"""Fake upstreams that bill a known usage, and a stand-in for the ledger's pricing step.

The budgets read ``ctx.usage`` and ``ctx.cost_usd``, which the usage ledger fills before the
recorders run (shared-usage.md). Until the ledger is on this branch, ``price_like_the_ledger``
does that step for the tests: the fakes' usage at the issue's default prices. It fills only what
is still empty, so once the ledger prices requests itself it changes nothing.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.context import RequestContext, Usage
from gateway.state import RECORDERS
from tests.fakes import Reply, completion

# USD per million input / output tokens (the defaults)
PRICES = {"cerebras": (2.25, 2.75), "synthetic": (0.55, 2.19), "zai": (0.60, 2.20)}
PROMPT, COMPLETION = 2000, 2000  # what every billed reply reports: $0.01 on Cerebras
CEREBRAS_COST = (PROMPT * 2.25 + COMPLETION * 2.75) / 1e6
TOKENS = PROMPT + COMPLETION


def billed(delay: float = 0.0) -> Reply:
    """A completion whose usage is PROMPT + COMPLETION tokens, after ``delay`` seconds."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        data = completion("billed", body.get("model", ""))
        data["usage"] = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION,
                         "total_tokens": PROMPT + COMPLETION}
        return web.json_response(data)

    return reply


def price_like_the_ledger(app: web.Application) -> None:
    """Put the pricing step first among the app's recorders (where the ledger's goes)."""

    def price(ctx: RequestContext) -> None:
        if ctx.usage is None and ctx.provider is not None and ctx.status == 200:
            ctx.usage = Usage(PROMPT, COMPLETION)
            price_in, price_out = PRICES[ctx.provider]
            ctx.cost_usd = (PROMPT * price_in + COMPLETION * price_out) / 1e6

    app[RECORDERS].insert(0, price)
