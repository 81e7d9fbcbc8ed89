"""Prometheus metrics: one registry per app, filled once per request from its context.

``Metrics.record`` is one of the app's recorders (``app[RECORDERS]``, after the usage ledger's,
which prices the context): it reads the finished ``RequestContext`` and updates a handful of
counters and histograms. Everything that is a state rather than an event (keys, in-flight
requests, budgets, the ledger's queue) is read at scrape time by the collectors in
``collectors.py``, never per request.

Names follow OpenTelemetry's GenAI semantic conventions where they name the metric, in Prometheus
form (dots become underscores, the unit is a suffix): ``gen_ai_client_token_usage``,
``gen_ai_client_operation_duration_seconds``, ``gen_ai_server_time_to_first_token_seconds``,
with the conventions' attributes as labels (``gen_ai_operation_name``, ``gen_ai_provider_name``,
``gen_ai_request_model``, ``gen_ai_response_model``, ``gen_ai_token_type``, ``error_type``). The
gateway's own are under ``glm_gateway_``.

Cardinality is bounded by construction: routes are route templates (no route: ``unmatched``),
models are the configured public ones (anything else: ``other``), providers and key names come
from the configuration, outcomes from ``Failure``, and the few free-ish values (client names,
repair kinds, strategies) go through :class:`Bounded`, which keeps the first ``limit`` distinct
values and maps the rest to ``other``. No label ever holds a secret, a request id or a path.

Cost: what a request records is kept as plain numbers (:class:`Family`) and handed to
prometheus_client only when ``/metrics`` is scraped: a chat request's eight samples cost about
2 µs, against about 10 µs through prometheus_client's locked ``inc``/``observe``.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ..context import RequestContext
from .collectors import GatewayCollector

OTHER = "other"
UNMATCHED = "unmatched"  # requests that matched no route (404, 405): one label value for them all
CHAT = "chat"  # gen_ai_operation_name of a chat completion

# LLM latencies: from a few milliseconds (a cached local answer, the gateway's own errors) to the
# ten minutes a CPU llama.cpp may take on a long prompt. The conventions suggest buckets up to
# 81.92 s; agents' long completions run past that, hence the longer tail.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
                   320.0, 600.0)
# the conventions' token buckets (powers of 4), up to 4M tokens
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
# the gateway's own time per request: tenths of a millisecond to a tenth of a second
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

GEN_AI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model")


class Bounded:
    """A label's values, at most ``limit`` distinct ones: later newcomers read as ``other``.
    ``None`` reads as ``""`` (no value). A safety valve for values bounded only by data (client
    names come from the key database); configured names never reach the limit."""

    def __init__(self, limit: int, allowed: Iterable[str] | None = None) -> None:
        self.limit = limit
        self.seen: dict[str | None, str] = {None: ""}
        self.closed = allowed is not None  # with a fixed set, nothing else is ever added
        for value in allowed or ():
            self.seen[value] = value

    def __call__(self, value: str | None) -> str:
        got = self.seen.get(value)
        if got is not None:
            return got
        if self.closed or len(self.seen) > self.limit:
            return OTHER
        label = str(value)
        self.seen[value] = label
        return label


class Family:
    """One labelled counter or histogram, kept as plain numbers and rendered at scrape time.

    prometheus_client's ``Counter``/``Histogram`` take a lock per ``inc``/``observe`` and walk
    the bucket list one locked value at a time: about 1.5 µs a histogram sample, ~10 µs for a
    chat request's eight samples, on the hot path of every request. Here a sample is a dict
    lookup and an add (a histogram's bucket found by ``bisect``), ~0.2 µs; the exposition is
    still prometheus_client's, fed ``CounterMetricFamily``/``HistogramMetricFamily`` when
    ``/metrics`` is scraped. Lock-free by design: the recorder and the scrape both run on the
    event loop."""

    __slots__ = ("name", "doc", "labels", "buckets", "values", "_le")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...] = ()) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.buckets = buckets  # (): a counter
        # counter: labels -> total; histogram: labels -> [count per bucket..., +Inf count, sum]
        self.values: dict[tuple, Any] = {}
        self._le = [floatToGoString(b) for b in buckets] + ["+Inf"]

    def inc(self, key: tuple, amount: float = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) + amount

    def observe(self, key: tuple, value: float) -> None:
        counts = self.values.get(key)
        if counts is None:
            counts = self.values[key] = [0] * (len(self._le) + 1)
        counts[bisect_left(self.buckets, value)] += 1
        counts[-1] += value

    def family(self) -> Metric:
        if not self.buckets:
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for key, total in self.values.items():
                counter.add_metric([str(v) for v in key], total)
            return counter
        histogram = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, counts in self.values.items():
            buckets = list(zip(self._le, accumulate(counts[:-1]), strict=True))
            histogram.add_metric([str(v) for v in key], buckets, sum_value=counts[-1])
        return histogram


class Recorded:
    """The families ``Metrics.record`` fills, as one prometheus_client collector."""

    def __init__(self, families: Iterable[Family]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.family()


class Metrics:
    """The app's metrics: the registry ``/metrics`` exposes, and the per-request recorder.

    Hooks other parts of the gateway fill in (read at scrape time; see collectors.py):
    ``budgets`` (remaining budget per client), ``ledger`` (usage rows dropped, queue depth),
    ``local_model`` (the local model's state)."""

    def __init__(self, public_models: Iterable[str], upstreams: Callable[[], Iterable[Any]] = list,
                 live: Iterable[RequestContext] = ()) -> None:
        prometheus_client.disable_created_metrics()  # no *_created series: half the exposition, no use here
        self.registry = registry = CollectorRegistry()
        prometheus_client.ProcessCollector(registry=registry)
        prometheus_client.GCCollector(registry=registry)
        self.budgets: object | None = None
        self.ledger: object | None = None
        self.local_model: object | None = None
        self.shared: object | None = None  # REDIS_URL: gateway/shared's RedisShared (connected, times_degraded)
        self.collector = GatewayCollector(self, upstreams, live)
        registry.register(self.collector)

        self.model = Bounded(0, allowed=public_models)
        self.client = Bounded(1000)
        self.kind = Bounded(100)  # repair kinds, strategies, outcomes: code-defined, bounded anyway

        self.requests = Family(
            "glm_gateway_requests", "Requests answered, by route template, status, serving provider and client.",
            ("route", "status", "provider", "client"))
        self.attempts = Family(
            "glm_gateway_upstream_attempts",
            "Upstream calls, by provider, key name and outcome (ok or the failure kind).",
            ("provider", "key", "outcome"))
        self.fallbacks = Family(
            "glm_gateway_fallbacks",
            "Requests served by other than their first choice, by reason (the first failed attempt's outcome, "
            "or skipped: the plan left the first provider out), the provider left and the one that served.",
            ("reason", "from_provider", "to_provider"))
        self.repairs = Family("glm_gateway_repairs", "Tool-call transcript repairs, by kind.", ("kind",))
        self.routing = Family(
            "glm_gateway_routing_decisions", "Routing strategies' decisions, by strategy and outcome.",
            ("strategy", "outcome"))
        self.cost = Family(
            "glm_gateway_cost_usd", "Cost of served tokens in US dollars, by provider and client.",
            ("provider", "client"))
        self.overhead = Family(
            "glm_gateway_overhead_seconds",
            "The gateway's own time per proxied request, upstream time excluded (X-Gateway-Overhead-Ms; "
            "a stream: until its headers were sent).", (), OVERHEAD_BUCKETS)
        self.duration = Family(
            "gen_ai_client_operation_duration_seconds",
            "Chat requests' duration as the gateway served them, first byte in to last byte out.",
            (*GEN_AI_LABELS, "error_type"), LATENCY_BUCKETS)
        self.tokens = Family(
            "gen_ai_client_token_usage", "Tokens per chat request, by type (input, output).",
            (*GEN_AI_LABELS, "gen_ai_token_type"), TOKEN_BUCKETS)
        self.ttft = Family(
            "gen_ai_server_time_to_first_token_seconds",
            "Streamed chat requests' time from arrival to the first event from the upstream.",
            GEN_AI_LABELS, LATENCY_BUCKETS)
        registry.register(Recorded((self.requests, self.attempts, self.fallbacks, self.repairs, self.routing,
                                    self.cost, self.overhead, self.duration, self.tokens, self.ttft)))

    # ---- the recorder: once per request, from its context --------------------------------------

    def record(self, ctx: RequestContext) -> None:
        provider = ctx.provider or ""
        client = self.client(ctx.client_name)
        self.requests.inc((ctx.route or UNMATCHED, ctx.status, provider, client))
        if ctx.overhead_sent_ms is not None:
            self.overhead.observe((), ctx.overhead_sent_ms / 1000)
        attempts = ctx.attempts
        if attempts:
            inc = self.attempts.inc
            for a in attempts:
                inc((a.provider, a.key, a.outcome))
            if ctx.fallback_reason is not None:
                first = attempts[0]
                self.fallbacks.inc((first.outcome, first.provider, provider))
        if ctx.skipped and ctx.provider is not None and ctx.fallback_reason is None:
            self.fallbacks.inc(("skipped", self.kind(ctx.skipped[0].partition(":")[0]), provider))
        if ctx.repairs:
            for kind, n in ctx.repairs.items():
                self.repairs.inc((self.kind(kind),), n)
        if ctx.routing is not None:
            self.routing.inc((self.kind(ctx.routing[0]), self.kind(ctx.routing[1])))
        if ctx.stream is not None:  # a chat request (the handler parsed it)
            self._record_chat(ctx, provider, client)

    def _record_chat(self, ctx: RequestContext, provider: str, client: str) -> None:
        model = self.model
        asked, served = model(ctx.model_asked), model(ctx.model_served)
        self.duration.observe((CHAT, provider, asked, served, error_type(ctx)), ctx.latency_ms / 1000)
        usage = ctx.usage
        if usage is not None:
            observe = self.tokens.observe
            observe((CHAT, provider, asked, served, "input"), usage.prompt_tokens)
            observe((CHAT, provider, asked, served, "output"), usage.completion_tokens)
        if ctx.stream and ctx.provider is not None and ctx.first_token_ns is not None:
            self.ttft.observe((CHAT, provider, asked, served), (ctx.first_token_ns - ctx.started_ns) / 1e9)
        if ctx.cost_usd:
            self.cost.inc((provider, client), ctx.cost_usd)


def error_type(ctx: RequestContext) -> str:
    """The conventions' ``error.type`` of a chat request: "" when it succeeded, else a bounded
    class: ``midstream`` (a stream broke after its first byte), ``cancelled`` (the client left),
    or the HTTP status the client got. (Pure.)"""
    if ctx.stream_error is not None:
        return "midstream"
    if ctx.client_disconnected:
        return "cancelled"
    if ctx.status >= 400:
        return str(ctx.status)
    return ""
