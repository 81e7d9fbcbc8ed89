"""Budget alerts: one structured log event per threshold per window, and a webhook POST of it.

The request path only calls :meth:`Alerts.fire` (a log line and a ``put_nowait``); delivery is a
background task, so a slow or dead receiver never delays a request. Events carry names, amounts
and times, never a key or secret.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

log = structlog.get_logger("gateway.alerts")

ALERT_EVENT = "budget_threshold_reached"
QUEUE_LIMIT = 256  # alerts waiting for the webhook; beyond this they are dropped (and counted)
BACKOFF = (1.0, 4.0, 15.0)  # seconds between tries: four tries in all, about 20 s
CONNECT_TIMEOUT = 3.0


class WebhookSender:
    """POSTs alert events to one URL, in order, retrying each with backoff.

    Its own small ``aiohttp.ClientSession`` (made by :meth:`session`, closed by the app's
    cleanup_ctx), apart from the upstream client: webhooks want short timeouts (seconds, where an
    upstream stream may be silent for minutes) and two connections at most, and a receiver that
    hangs must not hold connections the upstream calls need."""

    def __init__(self, url: str, timeout: float, *, queue_limit: int = QUEUE_LIMIT,
                 backoff: Sequence[float] = BACKOFF) -> None:
        self._url = url
        self.target = URL(url).host or "?"  # what may be shown: the URL itself may hold a token
        self.timeout = timeout
        self.backoff = tuple(backoff)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_limit)
        self.sent = 0
        self.failed = 0  # events given up on after every try
        self.dropped = 0  # events refused because the queue was full
        self.retries = 0

    def submit(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("alert_webhook_queue_full", dropped=self.dropped, queued=self.queue.qsize())

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT)),
            connector=aiohttp.TCPConnector(limit=2),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Deliver queued events until cancelled."""
        while True:
            event = await self.queue.get()
            try:
                await self.deliver(session, event)
            finally:
                self.queue.task_done()

    async def deliver(self, session: aiohttp.ClientSession, event: dict[str, Any]) -> bool:
        body = orjson.dumps(event)
        tries = len(self.backoff) + 1
        for attempt in range(1, tries + 1):
            try:
                async with session.post(self._url, data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self.sent += 1
                        return True
                    problem = f"status {resp.status}"
            except (TimeoutError, aiohttp.ClientError) as e:
                problem = type(e).__name__  # not str(e): it may repeat the URL
            if attempt == tries:
                break
            self.retries += 1
            log.info("alert_webhook_retry", target=self.target, attempt=attempt, problem=problem)
            await asyncio.sleep(self.backoff[attempt - 1])
        self.failed += 1
        log.warning("alert_webhook_failed", target=self.target, tries=tries, problem=problem,
                    budget=event.get("budget"), threshold=event.get("threshold"))
        return False

    def status(self) -> dict[str, Any]:
        return {"target": self.target, "queued": self.queue.qsize(), "sent": self.sent,
                "retries": self.retries, "failed": self.failed, "dropped": self.dropped}


class Alerts:
    """Where threshold events go: the log, and the webhook when one is configured."""

    def __init__(self, webhook: WebhookSender | None = None) -> None:
        self.webhook = webhook
        self.fired = 0

    def fire(self, event: dict[str, Any]) -> None:
        self.fired += 1
        log.warning(ALERT_EVENT, **{k: v for k, v in event.items() if k != "event"})
        if self.webhook is not None:
            self.webhook.submit(event)

    def status(self) -> dict[str, Any]:
        return {"fired": self.fired, "webhook": self.webhook.status() if self.webhook else None}
