"""Prometheus metrics: `GET /metrics`, fed by the finished-request records and read from the runtime at scrape time.

    Metrics(holder, …)          the collectors; `observe(record)` is a quick record subscriber (a few µs: cached
                                label children, a handful of increments), `refresh()` copies what is read rather
                                than counted (breakers, in-flight, reloads, cost totals) into them
    Metrics.app                 the ASGI app mounted at /metrics (admin key when one is set, else loopback only)
    Metrics.running             the lifespan part: under `--workers N`, each worker refreshes every second
    error_type(record)          the request's error class, from one fixed list (`ERROR_TYPES`)

Names (docs/metrics.md lists every metric and label): the OpenTelemetry GenAI conventions where they define one
(`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`, `gen_ai_server_time_to_first_token_seconds`,
in the conventions' Prometheus spelling and with their bucket boundaries); ccm's own `ccm_*` for the rest.

Every label value comes from a bounded set: the route file's names (rules as written, model aliases, provider
names, the upstream models the table deploys), fixed vocabularies (status classes, error types, token types), or
`_OTHER`. A model a client names itself (`provider/anything`, which the table does not declare) is `_OTHER`; request
ids, session ids and raw client model names are never labels.

Several worker processes (`ccm run --workers N`): prometheus_client's multiprocess mode. `ccm run` points
`PROMETHEUS_MULTIPROC_DIR` at a temporary folder it owns (and removes at exit) before the workers start; each
worker's values live in memory-mapped files there, and a scrape, answered by whichever worker accepts it, adds them
up. What is read rather than counted (breaker states, in-flight counts) is written by each worker every
`REFRESH_SECONDS` and at each scrape it answers; gauges of workers that have exited are dropped at scrape time.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import os
import re
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from decimal import Decimal

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ccm.core.admission import admit_page
from ccm.core.deployments import deployments_of
from ccm.core.inflight import InFlight
from ccm.core.record import Attempt, RequestRecord
from ccm.core.reload import Reloader, ReloadEvent
from ccm.core.runtime import Runtime, RuntimeHolder
from ccm.core.types import Receive, Scope, Send
from ccm.costs import Costs, PriceListCosts
from ccm.errors import ApiError

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_SECONDS = 1.0

# --- the conventions' bucket boundaries (OpenTelemetry GenAI metrics, ExplicitBucketBoundaries) -----------------
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# ccm's own overhead is in the sub-millisecond range (docs/benchmarks.md): finer buckets than the conventions'
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

OTHER = "_OTHER"
OPERATION = "chat"  # gen_ai.operation.name of a Messages call

# The error classes, modelled on Bifrost's error_type: who was at fault (the caller, a policy of ccm's, the provider,
# ccm itself). `error_type` maps a record to exactly one of these, or "" when the request succeeded.
ERROR_TYPES: tuple[str, ...] = (
    "caller_invalid_request",  # ccm or the upstream refused the request as malformed (400, 404 path, 405, 413, 415)
    "caller_model_unknown",  # GET /v1/models/{id} for a model the table does not declare
    "caller_model_not_available",  # the upstream said the model does not exist (404)
    "caller_cancelled",  # the client left before the answer was complete (499, or mid-stream)
    "policy_access_denied",  # ccm's admission: no or a wrong inbound key (401), not this machine (403)
    "policy_budget_exceeded",  # ccm's admission: no credit left (402; with the ledger)
    "policy_rate_limited",  # ccm's admission: a key's rate limit (429; with the ledger)
    "provider_auth_failed",  # the upstream refused ccm's key (401/403)
    "provider_billing",  # the upstream wants payment (402)
    "provider_rate_limited",  # 429 from the upstream
    "provider_overloaded",  # 529/503 from the upstream, or every deployment's circuit open
    "provider_server_error",  # another 5xx, or an error event in the stream
    "provider_bad_response",  # an answer ccm could not read (wrong content type, broken JSON or SSE)
    "provider_truncated",  # the upstream's stream ended before its protocol's end
    "provider_timeout",  # no answer within the timeouts (504)
    "provider_connection_failed",  # could not connect, or the connection broke before an answer
    "provider_unconfigured",  # the provider's key or URL variable is not set
    "ccm_internal",  # a failure of ccm's own (500 with no upstream involved)
    OTHER,  # anything else: alarm on it, it means this list needs a new entry
)

# an attempt's failure reason (`Attempt.reason`) -> its error class; a 4xx is split by status in `_attempt_error`
_REASONS = {
    "429": "provider_rate_limited", "529": "provider_overloaded", "timeout": "provider_timeout",
    "connect": "provider_connection_failed", "protocol": "provider_bad_response", "config": "provider_unconfigured",
}
# an Anthropic error type in a stream's `error` event (the 200 was out) -> its error class
_STREAM_ERRORS = {
    "overloaded_error": "provider_overloaded", "rate_limit_error": "provider_rate_limited",
    "timeout_error": "provider_timeout", "api_error": "provider_server_error",
}

# gen_ai.provider.name's well-known values: by the provider's host first (an `openai` provider may be DeepSeek),
# else by ccm's wire type
_GENAI_BY_TYPE = {"anthropic": "anthropic", "openai": "openai", "openai-responses": "openai", "gemini": "gcp.gemini"}
_GENAI_BY_HOST = (
    ("api.anthropic.com", "anthropic"), ("api.openai.com", "openai"), ("openai.azure.com", "azure.ai.openai"),
    ("deepseek.com", "deepseek"), ("groq.com", "groq"), ("mistral.ai", "mistral_ai"), ("moonshot.ai", "moonshot_ai"),
    ("moonshot.cn", "moonshot_ai"), ("x.ai", "x_ai"), ("perplexity.ai", "perplexity"), ("cohere.com", "cohere"),
    ("cohere.ai", "cohere"), ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("generativelanguage.googleapis.com", "gcp.gemini"), ("amazonaws.com", "aws.bedrock"),
)
_HOST = re.compile(r"^[a-z][a-z0-9+.-]*://(?:[^@/]*@)?([^/:?#]+)", re.IGNORECASE)
_ENDPOINTS = {"/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens", "/v1/models": "models",
              "/health": "health"}
_ZERO = Decimal(0)
_BREAKER_STATES = {"closed": 0, "off": 0, "half_open": 1, "open": 2}


def genai_provider(provider_type: str, url: str) -> str:
    match = _HOST.match(url)
    host = match.group(1).lower() if match else ""
    for suffix, name in _GENAI_BY_HOST:
        if host == suffix or host.endswith("." + suffix):
            return name
    return _GENAI_BY_TYPE.get(provider_type, OTHER)


def error_type(record: RequestRecord) -> str:
    """The record's error class (one of `ERROR_TYPES`), or "" when it succeeded."""
    if record.outcome == "ok" and record.status < 400:
        return ""
    if record.outcome == "client_closed":
        return "caller_cancelled"
    if record.outcome == "truncated":
        return "provider_truncated"
    if record.status < 400:  # the 200 was out and the stream carried an error event
        return _STREAM_ERRORS.get(record.error or "", "provider_server_error")
    failed = _primary_failure(record.attempts)
    if failed is not None:
        return _attempt_error(failed)
    status = record.status
    if status in (401, 403):
        return "policy_access_denied"
    if status == 402:
        return "policy_budget_exceeded"
    if status == 429:
        return "policy_rate_limited"
    if status == 529:
        return "provider_overloaded"  # every deployment skipped: circuit open
    if status == 504:
        return "provider_timeout"
    if status == 404 and record.path.startswith("/v1/models/"):
        return "caller_model_unknown"
    if 400 <= status < 500:
        return "caller_invalid_request"
    if status >= 500:
        return "ccm_internal"
    return OTHER


def _primary_failure(attempts: tuple[Attempt, ...]) -> Attempt | None:
    """The failure the client was told about: dispatch answers with the first failing model's latest error."""
    failures = [a for a in attempts if a.reason is not None and a.reason != "hedged"]
    if not failures:
        return None
    first = failures[0].model
    return [a for a in failures if a.model == first][-1]


def _attempt_error(attempt: Attempt) -> str:
    reason = attempt.reason or ""
    if reason in _REASONS:
        return _REASONS[reason]
    if reason == "5xx":
        return "provider_overloaded" if attempt.status == 503 else "provider_server_error"
    if reason == "4xx":
        if attempt.status in (401, 403):
            return "provider_auth_failed"
        if attempt.status == 402:
            return "provider_billing"
        if attempt.status == 404:
            return "caller_model_not_available"
        return "caller_invalid_request"
    return OTHER


class _TableLabels:
    """The label values one table allows, built once per table version."""

    __slots__ = ("version", "models", "upstream_models", "genai")

    def __init__(self, runtime: Runtime) -> None:
        table = runtime.table
        self.version = table.version
        self.models = frozenset(table.models)
        self.upstream_models = frozenset(
            (d.provider, d.model) for m in table.models.values() for d in deployments_of(m)
        )
        self.genai = {name: genai_provider(p.provider.type, p.endpoint.url) for name, p in runtime.providers.items()}


class Metrics:
    def __init__(
        self,
        holder: RuntimeHolder,
        *,
        in_flight: InFlight | None = None,
        reloader: Reloader | None = None,
        costs: Costs | None = None,
        admin_key: str | None = None,
        multiprocess_dir: str | None = None,
    ) -> None:
        self._holder = holder
        self._in_flight = in_flight
        self._reloader = reloader
        self.costs: Costs = costs if costs is not None else PriceListCosts()
        self._admin_key = admin_key.encode() if admin_key else None
        self.multiprocess_dir = multiprocess_dir
        self._labels = _TableLabels(holder.current)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        genai = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model"]
        self.tokens = Histogram("gen_ai_client_token_usage", "Tokens used per request, by token type "
                                "(input counts cached tokens too; cache_read and cache_write are parts of it)",
                                [*genai, "gen_ai_token_type"], buckets=TOKEN_BUCKETS, registry=r)
        self.duration = Histogram("gen_ai_client_operation_duration_seconds",
                                  "Duration of a Messages request, from its arrival to the end of its answer",
                                  [*genai, "error_type"], buckets=DURATION_BUCKETS, registry=r)
        self.ttft = Histogram("gen_ai_server_time_to_first_token_seconds",
                              "Streams: from the request's arrival to the first byte of the answer sent",
                              genai, buckets=TTFT_BUCKETS, registry=r)
        self.requests = Counter("ccm_requests", "Requests answered, by endpoint, rule, model, provider, status class "
                                "and error type", ["endpoint", "rule", "model", "provider", "status_class",
                                                    "error_type"], registry=r)
        self.overhead = Histogram("ccm_overhead_seconds", "Time in ccm outside the upstream, for requests answered at "
                                  "their first attempt: time to the first byte sent minus the attempt's time",
                                  ["stream"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.attempts = Counter("ccm_upstream_attempts", "Upstream attempts, by result (ok or the failure reason)",
                                ["provider", "model", "result"], registry=r)
        self.attempt_seconds = Histogram("ccm_upstream_attempt_seconds", "An upstream attempt's time until its "
                                         "answer (a stream's first event) or its failure", ["provider"],
                                         buckets=DURATION_BUCKETS, registry=r)
        self.retries = Counter("ccm_retries", "Attempts after a failed one on the same model (the same deployment "
                               "again or another of its deployments)", ["provider", "model"], registry=r)
        self.fallbacks = Counter("ccm_fallbacks", "Moves to the next model of a fallback chain after a failure",
                                 ["from_model", "to_model"], registry=r)
        self.cost = Counter("ccm_cost_usd", "Cost in US dollars, by key and model (the route file's prices until "
                            "the ledger's)", ["key", "model"], registry=r)
        self.breaker = Gauge("ccm_breaker_state", "Circuit breaker per deployment: 0 closed (or off), 1 half-open, "
                             "2 open", ["provider", "upstream_model"], registry=r, multiprocess_mode="livemax")
        self.deployment_in_flight = Gauge("ccm_deployment_in_flight", "Upstream attempts in flight per deployment",
                                          ["provider", "upstream_model"], registry=r, multiprocess_mode="livesum")
        self.in_flight = Gauge("ccm_in_flight_requests", "API requests being served", registry=r,
                               multiprocess_mode="livesum")
        self.reloads = Counter("ccm_reloads", "Route file reloads, by result (each worker reloads on its own)",
                               ["result"], registry=r)
        for result in ("ok", "failed"):
            self.reloads.labels(result)
        self._counts: dict[tuple[Counter, tuple[str, ...]], int] = {}
        self._histograms: dict[tuple[Histogram, tuple[str, ...]], list[float]] = {}
        self._costs: dict[tuple[str, str], Decimal] = {}
        self.balances: Mapping[str, Decimal] = {}  # as the last scrape read them
        self._deployments: set[tuple[str, str]] = set()
        self._last_reload: ReloadEvent | None = reloader.history[-1] if reloader and reloader.history else None
        self.scrape_registry = self._scrape_registry()

    def _scrape_registry(self) -> CollectorRegistry:
        if self.multiprocess_dir is None:
            self.registry.register(_Balances(self))
            return self.registry
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(_Balances(self))
        return registry

    # --- the record subscriber (the request's task: keep it quick) ------------------------------------------
    #
    # A record is added to plain per-label-set accumulators (`_counts`, `_histograms`: a dict lookup, a bisect and a
    # few additions each, no lock: one event loop), and `flush` hands the totals to prometheus_client at each
    # refresh. prometheus_client's own `observe` takes three locks per histogram (~2 µs), seven times a request.

    def observe(self, record: RequestRecord) -> None:
        labels = self._labels
        if labels.version != record.table_version and self._holder.current.table.version == record.table_version:
            labels = self._labels = _TableLabels(self._holder.current)
        error = error_type(record)
        attempts = record.attempts
        last = attempts[-1] if attempts else None
        provider = last.provider if last is not None else ""
        model = "" if record.model is None else record.model if record.model in labels.models else OTHER
        endpoint = _ENDPOINTS.get(record.path) or ("models" if record.path.startswith("/v1/models/") else OTHER)
        count, histogram = self._count, self._histogram
        count(self.requests, (endpoint, record.rule or "", model, provider, f"{record.status // 100}xx", error))
        if endpoint != "messages" or not model:
            return
        genai = labels.genai.get(provider, OTHER) if provider else OTHER
        response_model = last.upstream_model if last is not None else ""
        if model == OTHER or (provider, response_model) not in labels.upstream_models:
            response_model = OTHER if response_model else ""
        base = (OPERATION, genai, model, response_model)
        histogram(self.duration, DURATION_BUCKETS, (*base, error), record.latency_ms / 1000)
        if record.stream and record.ttfb_ms is not None and record.status == 200:
            histogram(self.ttft, TTFT_BUCKETS, base, record.ttfb_ms / 1000)
        usage = record.usage
        if usage is not None:
            read, write = usage.cache_read, usage.cache_write_5m + usage.cache_write_1h
            histogram(self.tokens, TOKEN_BUCKETS, (*base, "input"), usage.input + read + write)
            histogram(self.tokens, TOKEN_BUCKETS, (*base, "output"), usage.output)
            if read:
                histogram(self.tokens, TOKEN_BUCKETS, (*base, "cache_read"), read)
            if write:
                histogram(self.tokens, TOKEN_BUCKETS, (*base, "cache_write"), write)
            cost = self.costs.request_cost(record)
            if cost is not None:
                key = (_key_label(record), model)
                self._costs[key] = self._costs.get(key, _ZERO) + cost
        if len(attempts) == 1 and last is not None and last.reason is None:
            sent = record.ttfb_ms if record.ttfb_ms is not None else record.latency_ms
            histogram(self.overhead, OVERHEAD_BUCKETS, ("true" if record.stream else "false",),
                      max(sent - last.latency_ms, 0.0) / 1000)
        previous: Attempt | None = None
        for attempt in attempts:
            attempt_model = attempt.model if attempt.model in labels.models else OTHER
            count(self.attempts, (attempt.provider, attempt_model, attempt.reason or "ok"))
            histogram(self.attempt_seconds, DURATION_BUCKETS, (attempt.provider,), attempt.latency_ms / 1000)
            if previous is not None and "hedged" not in (previous.reason, attempt.reason):  # a race, not a move
                if previous.model == attempt.model:
                    count(self.retries, (attempt.provider, attempt_model))
                else:
                    count(self.fallbacks, (previous.model if previous.model in labels.models else OTHER,
                                           attempt_model))
            previous = attempt

    def _count(self, metric: Counter, values: tuple[str, ...]) -> None:
        key = (metric, values)
        self._counts[key] = self._counts.get(key, 0) + 1

    def _histogram(self, metric: Histogram, bounds: tuple[float, ...], values: tuple[str, ...], amount: float) -> None:
        key = (metric, values)
        pending = self._histograms.get(key)
        if pending is None:  # [sum, then one count per bucket, +Inf's last]: prometheus_client's own layout
            pending = self._histograms[key] = [0.0] * (len(bounds) + 2)
        pending[0] += amount
        pending[1 + bisect.bisect_left(bounds, amount)] += 1

    def flush(self) -> None:
        """Hand the accumulated counts to prometheus_client (its values: the memory-mapped files in multiprocess
        mode). Counters and histograms have no public way to add a batch: their value objects do."""
        counts, self._counts = self._counts, {}
        for (counter, values), n in counts.items():
            counter.labels(*values)._value.inc(n)
        histograms, self._histograms = self._histograms, {}
        for (histogram, values), pending in histograms.items():
            child = histogram.labels(*values)
            child._sum.inc(pending[0])
            for bucket, observed in zip(child._buckets, pending[1:], strict=True):
                if observed:
                    bucket.inc(observed)

    # --- what is read, not counted ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Copy the runtime's live state (breakers, in-flight), the reloads since the last refresh and the exact
        cost totals into the collectors. At each scrape, and every second in each worker under `--workers N`."""
        self.flush()
        runtime = self._holder.current
        seen: set[tuple[str, str]] = set()
        for name, provider in runtime.providers.items():
            for upstream_model, state in provider.deployments.snapshot()["models"].items():
                labels = (name, OTHER if upstream_model == "*" else upstream_model)
                seen.add(labels)
                self.breaker.labels(*labels).set(_BREAKER_STATES.get(state["state"], 0))
                self.deployment_in_flight.labels(*labels).set(state["in_flight"])
        for gone in self._deployments - seen:  # a reload dropped the deployment
            for gauge in (self.breaker, self.deployment_in_flight):
                gauge.labels(*gone).set(0)
                gauge.remove(*gone)
        self._deployments = seen
        if self._in_flight is not None:
            self.in_flight.set(self._in_flight.running(sys.maxsize))
        self._count_reloads()
        for (key, model), total in list(self._costs.items()):
            # the exact Decimal total becomes a float here, at exposition (a counter has no `set`: its value does)
            self.cost.labels(key, model)._value.set(float(total))

    def _count_reloads(self) -> None:
        if self._reloader is None or not self._reloader.history:
            return
        history = self._reloader.history
        fresh: list[ReloadEvent] = []
        for event in reversed(history):
            if event is self._last_reload:
                break
            fresh.append(event)
        self._last_reload = history[-1]
        for event in fresh:
            self.reloads.labels("ok" if event.ok else "failed").inc()

    async def exposition(self) -> bytes:
        self.balances = await self.costs.balances()  # the ledger's, read now (the collector cannot wait)
        self.refresh()
        if self.multiprocess_dir is not None:
            _forget_dead_workers(self.multiprocess_dir)
        return generate_latest(self.scrape_registry)

    # --- serving -----------------------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            admit_page(scope, headers, self._admin_key)
            if scope["method"] not in ("GET", "HEAD"):
                raise ApiError(405, "use GET", headers=(("allow", "GET"),))
        except ApiError as error:
            await _respond(send, error.status, error.body(), b"application/json", error.headers)
            return
        body = await self.exposition()
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else body, CONTENT_TYPE_LATEST.encode())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Under `--workers N`: refresh every `REFRESH_SECONDS`, so the scrape, whichever worker answers it, sees
        every worker's breakers and in-flight counts. A single process refreshes at each scrape only."""
        if self.multiprocess_dir is None:
            yield
            return
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._refresh_every_second)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    async def _refresh_every_second(self) -> None:
        while True:
            self.refresh()
            await anyio.sleep(REFRESH_SECONDS)


def _key_label(record: RequestRecord) -> str:
    caller = record.caller
    if caller.kind == "key":
        return caller.key_id or caller.name or "key"
    return caller.kind


class _Balances(Collector):
    """`ccm_balance_usd{key}`, read from the costs seam at each scrape (`Metrics.exposition`): empty without the
    ledger (its store is shared by every worker, so whichever worker answers the scrape can read them all)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("ccm_balance_usd", "Remaining balance per key in US dollars (the ledger's)",
                                   labels=["key"])
        for key, balance in self._metrics.balances.items():
            family.add_metric([key], float(balance))
        yield family

    def describe(self) -> Iterable[Metric]:
        return self.collect()


def _forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that have exited (their counters stay: what they counted happened)."""
    from prometheus_client import multiprocess

    for pid in _pids(glob.glob(os.path.join(directory, "gauge_live*_*.db"))):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


def _pids(paths: Iterable[str]) -> Iterator[int]:
    for path in paths:
        tail = os.path.basename(path).rsplit("_", 1)[-1].removesuffix(".db")
        if tail.isdigit():
            yield int(tail)


async def _respond(send: Send, status: int, body: bytes, content_type: bytes,
                   extra: tuple[tuple[str, str], ...] = ()) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
