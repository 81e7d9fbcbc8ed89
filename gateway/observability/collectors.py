"""What the gateway *is* rather than what it did: read at scrape time, never per request.

``GatewayCollector.collect`` runs on the event loop when ``/metrics`` is scraped (it only reads
in-memory state, each key pool's ``status()`` included, so it needs no lock and no thread) and
yields fresh metric families each time:

- in-flight requests and streams, counted from the set of live request contexts the middleware
  keeps (a set add and discard per request is cheaper than a locked gauge inc/dec);
- per upstream key (from ``KeyPool.status()`` rows): available, seconds of rest left, the last
  reported remaining tokens and requests, in flight, disabled, errors, and the breaker state when
  the rows carry one (``"breaker": {"state": ...}``, ``"breaker": "open"`` or ``"state": ...``);
- hooks other parts of the gateway fill in on the ``Metrics`` object:
  ``metrics.budgets``: an object with ``budget_remaining() -> Iterable[(client, window, unit, value)]``
  (unit ``"usd"`` or ``"tokens"``, window e.g. ``"day"``/``"month"``);
  ``metrics.ledger``: an object with ``rows_dropped: int`` and optionally ``queue_depth: int``;
  ``metrics.local_model``: an object with ``model_state() -> (model, state)``, state one of
  ``LOCAL_STATES``;
  ``metrics.shared``: an object with ``connected: bool`` and ``times_degraded: int`` (REDIS_URL).
A hook that raises is logged and left out of that scrape; the rest of the scrape still answers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..context import RequestContext

if TYPE_CHECKING:
    from .metrics import Metrics

log = structlog.get_logger("gateway.metrics")

BREAKER_STATES = ("closed", "open", "half_open")
LOCAL_STATES = ("stopped", "starting", "ready", "failed")
KEY_LABELS = ("provider", "key")


def breaker_state(row: dict[str, Any]) -> str | None:
    """The breaker state a ``KeyPool.status()`` row reports, if it reports one. (Pure.)"""
    breaker = row.get("breaker")
    state = breaker.get("state") if isinstance(breaker, dict) else breaker
    if state is None:
        state = row.get("state")
    if not isinstance(state, str):
        return None
    return state if state in BREAKER_STATES else "other"


def _read(hook: Any, name: str) -> Any:
    """An attribute of a hook object, or what it returns if it is a method."""
    value = getattr(hook, name, None)
    return value() if callable(value) else value


class GatewayCollector:
    def __init__(self, metrics: Metrics, upstreams: Callable[[], Iterable[Any]],
                 live: Iterable[RequestContext]) -> None:
        self.metrics = metrics
        self.upstreams = upstreams
        self.live = live

    def collect(self) -> Iterator[Metric]:
        yield from self._in_flight()
        yield from self._keys()
        for name, part in (("budgets", self._budgets), ("ledger", self._ledger), ("local_model", self._local),
                           ("shared", self._shared)):
            hook = getattr(self.metrics, name)
            if hook is None:
                continue
            try:
                families = list(part(hook))
            except Exception:  # a hook's bug must not take the whole scrape down
                log.exception("metrics_hook_failed", hook=name)
                continue
            yield from families

    def _in_flight(self) -> Iterator[Metric]:
        requests = streams = 0
        for ctx in list(self.live):
            requests += 1
            if ctx.stream and ctx.first_token_ns is not None:  # relaying an open upstream stream
                streams += 1
        yield GaugeMetricFamily("glm_gateway_requests_in_flight", "Requests being served now.", value=requests)
        yield GaugeMetricFamily("glm_gateway_streams_in_flight", "Streams being relayed now.", value=streams)

    def _keys(self) -> Iterator[Metric]:
        available = GaugeMetricFamily("glm_gateway_key_available", "1 if the upstream key can take a request now.",
                                      labels=KEY_LABELS)
        rest = GaugeMetricFamily("glm_gateway_key_rest_seconds", "Seconds of rest left for the upstream key.",
                                 labels=KEY_LABELS)
        tokens = GaugeMetricFamily("glm_gateway_key_remaining_tokens",
                                   "Tokens left this minute as the upstream last reported them.", labels=KEY_LABELS)
        requests = GaugeMetricFamily("glm_gateway_key_remaining_requests",
                                     "Requests left today as the upstream last reported them.", labels=KEY_LABELS)
        in_flight = GaugeMetricFamily("glm_gateway_key_in_flight", "Requests in flight on the upstream key.",
                                      labels=KEY_LABELS)
        disabled = GaugeMetricFamily("glm_gateway_key_disabled", "1 if the upstream key is disabled (401/403).",
                                     labels=KEY_LABELS)
        errors = CounterMetricFamily("glm_gateway_key_errors", "Errors the upstream key has had since start.",
                                     labels=KEY_LABELS)
        breaker = GaugeMetricFamily("glm_gateway_key_breaker_state",
                                    "1 for the upstream key's current breaker state.", labels=(*KEY_LABELS, "state"))
        for up in self.upstreams():
            for row in up.pool.status():
                labels = [up.name, str(row["name"])]
                available.add_metric(labels, 1.0 if row.get("available") else 0.0)
                rest.add_metric(labels, float(row.get("rate_limited_for") or 0.0))
                if row.get("remaining_tokens_minute") is not None:
                    tokens.add_metric(labels, float(row["remaining_tokens_minute"]))
                if row.get("remaining_requests_day") is not None:
                    requests.add_metric(labels, float(row["remaining_requests_day"]))
                in_flight.add_metric(labels, float(row.get("in_flight") or 0))
                disabled.add_metric(labels, 0.0 if row.get("disabled_reason") is None else 1.0)
                errors.add_metric(labels, float(row.get("error_count") or 0))
                state = breaker_state(row)
                if state is not None:
                    for known in (*BREAKER_STATES, "other") if state == "other" else BREAKER_STATES:
                        breaker.add_metric([*labels, known], 1.0 if known == state else 0.0)
        yield from (available, rest, tokens, requests, in_flight, disabled, errors)
        if breaker.samples:
            yield breaker

    def _budgets(self, hook: Any) -> Iterator[Metric]:
        usd = GaugeMetricFamily("glm_gateway_budget_remaining_usd", "US dollars left in the client's budget window.",
                                labels=("client", "window"))
        tokens = GaugeMetricFamily("glm_gateway_budget_remaining_tokens", "Tokens left in the client's budget window.",
                                   labels=("client", "window"))
        client, kind = self.metrics.client, self.metrics.kind
        for name, window, unit, value in hook.budget_remaining():
            family = usd if unit == "usd" else tokens
            family.add_metric([client(name), kind(window)], float(value))
        yield usd
        yield tokens

    def _ledger(self, hook: Any) -> Iterator[Metric]:
        dropped = _read(hook, "rows_dropped")
        if dropped is not None:
            yield CounterMetricFamily("glm_gateway_usage_rows_dropped",
                                      "Usage rows dropped because the ledger's queue was full.", value=float(dropped))
        depth = _read(hook, "queue_depth")
        if depth is not None:
            yield GaugeMetricFamily("glm_gateway_usage_queue_depth", "Usage rows waiting to be written.",
                                    value=float(depth))

    def _shared(self, hook: Any) -> Iterator[Metric]:
        yield GaugeMetricFamily("glm_gateway_shared_state_connected",
                                "1 if state is shared with other replicas now (Redis reachable); 0: degraded.",
                                value=1.0 if hook.connected else 0.0)
        yield CounterMetricFamily("glm_gateway_shared_state_degraded",
                                  "Times the gateway lost Redis and served on local state.",
                                  value=float(hook.times_degraded))

    def _local(self, hook: Any) -> Iterator[Metric]:
        model, state = hook.model_state()
        family = GaugeMetricFamily("glm_gateway_local_model_state", "1 for the local model's current state.",
                                   labels=("model", "state"))
        name = self.metrics.model(model)
        for known in LOCAL_STATES:
            family.add_metric([name, known], 1.0 if known == state else 0.0)
        yield family
