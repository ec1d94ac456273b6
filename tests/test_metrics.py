"""`ccm.metrics` on its own: the error classes, the bounded labels, cost exactness, the page's admission."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccm.compile.check import RouteText, check
from ccm.core.record import Attempt, Caller, RequestRecord, TokenUsage
from ccm.core.runtime import RuntimeHolder, build_runtime
from ccm.costs import PriceListCosts, price_cost
from ccm.metrics import ERROR_TYPES, Metrics, error_type, genai_provider
from ccm.table import Price

ROUTES = """
provider anthropic {
  type anthropic
  url  "https://api.anthropic.com"
  key  env("ANTHROPIC_API_KEY")
}
provider deepseek {
  type openai
  url  "https://api.deepseek.com/v1"
  key  env("DEEPSEEK_API_KEY")
}
model opus = anthropic/claude-opus-5-5 {
  price input 5 output 25 cache_read 0.5 cache_write_5m 6.25 cache_write_1h 10 web_search 10
}
model coder = deepseek/deepseek-chat {
  price input 0.27 output 1.10
}
route {
  subagent -> coder
  default  -> opus
}
fallback opus -> coder
"""
ENVIRON = {"ANTHROPIC_API_KEY": "sk-ant", "DEEPSEEK_API_KEY": "sk-ds"}


def runtime_holder() -> RuntimeHolder:
    checked = check(RouteText(ROUTES, "metrics.ccm", Path(".")), ENVIRON)
    assert checked.table is not None, [p.render() for p in checked.problems]
    runtime, _ = build_runtime(checked.table, ENVIRON)
    return RuntimeHolder(runtime)


VERSION = runtime_holder().current.table.version
OPUS_PRICE = Price(input=5, output=25, cache_read=Decimal("0.5"), cache_write_5m=Decimal("6.25"),
                   cache_write_1h=10, web_search=10)


def record(**fields: Any) -> RequestRecord:
    base: dict[str, Any] = dict(request_id="req_ccm_1", started_at=0.0, method="POST", path="/v1/messages",
                                status=200, latency_ms=812.0, table_version=VERSION, rule="default", rule_index=1,
                                model="opus", target="anthropic/claude-opus-5-5", price=OPUS_PRICE,
                                session_id="438f2556-0f1f-499d-90cb-ac5e6d7acc43", requested_model="claude-opus-5-5")
    return RequestRecord(**{**base, **fields})


USAGE = TokenUsage(input=2, output=20, cache_read=7276, cache_write_1h=12145)
ANSWERED = Attempt("anthropic", "opus", "claude-opus-5-5", 200, None, 805.0, usage=USAGE)
RECORDS = {
    "answered, not streamed": record(attempts=(ANSWERED,), usage=USAGE, ttfb_ms=811.0),
    "streamed, cache reads": record(attempts=(ANSWERED,), usage=USAGE, stream=True, ttfb_ms=420.0),
    "retried, then fell back": record(
        model="coder", target="deepseek/deepseek-chat", price=Price(input=Decimal("0.27"), output=Decimal("1.10")),
        usage=USAGE,
        attempts=(Attempt("anthropic", "opus", "claude-opus-5-5", 529, "529", 30.0),
                  Attempt("anthropic", "opus", "claude-opus-5-5", 529, "529", 31.0),
                  Attempt("deepseek", "coder", "deepseek-chat", 200, None, 700.0, usage=USAGE)), ttfb_ms=790.0),
    "refused (400)": record(status=400, error="invalid_request_error", outcome="error", rule=None, model=None,
                            target=None, price=None, latency_ms=0.2),
}


def samples(metrics: Metrics) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(asyncio.run(metrics.exposition()).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


@pytest.mark.parametrize("fields, expected", [
    (dict(), ""),
    (dict(status=499, outcome="client_closed"), "caller_cancelled"),
    (dict(outcome="client_closed", client_disconnected=True), "caller_cancelled"),
    (dict(outcome="truncated", truncated=True), "provider_truncated"),
    (dict(outcome="error", error="overloaded_error"), "provider_overloaded"),  # an error event mid-stream
    (dict(status=400, outcome="error"), "caller_invalid_request"),
    (dict(status=415, outcome="error"), "caller_invalid_request"),
    (dict(status=401, outcome="error"), "policy_access_denied"),
    (dict(status=403, outcome="error"), "policy_access_denied"),
    (dict(status=402, outcome="error"), "policy_budget_exceeded"),
    (dict(status=429, outcome="error"), "policy_rate_limited"),
    (dict(status=529, outcome="error"), "provider_overloaded"),
    (dict(status=500, outcome="error"), "ccm_internal"),
    (dict(status=404, outcome="error", path="/v1/models/nope"), "caller_model_unknown"),
    (dict(status=404, outcome="error", path="/nope"), "caller_invalid_request"),
])
def test_error_types_of_ccm_own_answers(fields: dict[str, Any], expected: str) -> None:
    assert error_type(record(**fields)) == expected


@pytest.mark.parametrize("status, reason, expected", [
    (429, "429", "provider_rate_limited"), (529, "529", "provider_overloaded"), (503, "5xx", "provider_overloaded"),
    (500, "5xx", "provider_server_error"), (504, "timeout", "provider_timeout"),
    (502, "connect", "provider_connection_failed"), (502, "protocol", "provider_bad_response"),
    (424, "config", "provider_unconfigured"), (401, "4xx", "provider_auth_failed"),
    (403, "4xx", "provider_auth_failed"), (402, "4xx", "provider_billing"),
    (404, "4xx", "caller_model_not_available"), (400, "4xx", "caller_invalid_request"),
])
def test_error_types_of_upstream_failures(status: int, reason: str, expected: str) -> None:
    failed = Attempt("anthropic", "opus", "claude-opus-5-5", status, reason, 10.0)
    assert error_type(record(status=status, outcome="error", attempts=(failed,))) == expected


def test_the_client_is_told_the_primary_models_error() -> None:
    """Dispatch answers with the first failing model's latest error, not the fallback's."""
    attempts = (Attempt("anthropic", "opus", "m", 429, "429", 1.0), Attempt("anthropic", "opus", "m", 529, "529", 1.0),
                Attempt("deepseek", "coder", "d", 500, "5xx", 1.0))
    assert error_type(record(status=529, outcome="error", attempts=attempts)) == "provider_overloaded"


def test_every_error_type_is_in_the_one_list() -> None:
    statuses = range(100, 600)
    reasons = [None, "429", "5xx", "529", "timeout", "connect", "4xx", "protocol", "config", "weird"]
    seen = {error_type(record(status=s, outcome="error", attempts=(Attempt("p", "m", "u", s, r, 1.0),) if r else ()))
            for s in statuses for r in reasons}
    assert seen <= set(ERROR_TYPES) | {""}
    assert len(ERROR_TYPES) == len(set(ERROR_TYPES)) and "_OTHER" in ERROR_TYPES


@pytest.mark.parametrize("kind, url, expected", [
    ("anthropic", "https://api.anthropic.com", "anthropic"), ("openai", "https://api.openai.com/v1", "openai"),
    ("openai", "https://api.deepseek.com/v1", "deepseek"), ("openai", "https://api.groq.com/openai/v1", "groq"),
    ("openai", "http://127.0.0.1:4000/v1", "openai"), ("gemini", "https://generativelanguage.googleapis.com",
                                                        "gcp.gemini"),
    ("openai-responses", "https://example.test", "openai"), ("openai", "https://user:pw@api.x.ai/v1", "x_ai"),
])
def test_genai_provider_names(kind: str, url: str, expected: str) -> None:
    assert genai_provider(kind, url) == expected


def test_labels_are_bounded_and_cost_is_exact() -> None:
    metrics = Metrics(runtime_holder())
    invented = record(model="anthropic/made-up-by-client", target="anthropic/made-up-by-client", price=None,
                      attempts=(Attempt("anthropic", "anthropic/made-up-by-client", "made-up-by-client", 200, None,
                                        5.0),), usage=USAGE)
    for _ in range(3):
        for each in (*RECORDS.values(), invented):
            metrics.observe(each)
    text = asyncio.run(metrics.exposition()).decode()
    for unbounded in ("made-up-by-client", "req_ccm_1", "438f2556", "claude-opus-5-5\"}"):
        assert unbounded not in text.replace('upstream_model="claude-opus-5-5"', "").replace(
            'gen_ai_response_model="claude-opus-5-5"', "")
    found = samples(metrics)
    costs = {(s.labels["key"], s.labels["model"]): s.value for s in found["ccm_cost_usd_total"]}
    opus = price_cost(USAGE, OPUS_PRICE) * 6  # two opus records, three times
    coder = price_cost(USAGE, Price(input=Decimal("0.27"), output=Decimal("1.10"))) * 3
    assert costs == {("local", "opus"): float(opus), ("local", "coder"): float(coder)}
    assert price_cost(TokenUsage(1_000_000, 0), Price(input=Decimal("0.27"), output=Decimal("1.1"))) == Decimal("0.27")


def test_a_hedges_race_is_counted_as_a_hedged_attempt_not_as_a_fallback() -> None:
    metrics = Metrics(runtime_holder())
    cancelled = Attempt("anthropic", "opus", "claude-opus-5-5", 499, "hedged", 10_000.0)
    served = Attempt("deepseek", "coder", "deepseek-chat", 200, None, 700.0, usage=USAGE)
    metrics.observe(record(model="coder", attempts=(cancelled, served), usage=USAGE))
    found = samples(metrics)
    results = {(s.labels["provider"], s.labels["result"]): s.value for s in found["ccm_upstream_attempts_total"]}
    assert results == {("anthropic", "hedged"): 1, ("deepseek", "ok"): 1}
    assert "ccm_fallbacks_total" not in found and "ccm_retries_total" not in found
    failed_race = record(status=503, outcome="error", attempts=(Attempt("deepseek", "coder", "d", 503, "5xx", 1.0),
                                                               cancelled))
    assert error_type(failed_race) == "provider_overloaded"  # the side that failed, not the one ccm cancelled


def test_keys_are_labelled_by_id_never_by_secret() -> None:
    metrics = Metrics(runtime_holder())
    metrics.observe(record(attempts=(ANSWERED,), usage=USAGE, caller=Caller("key", "key_01", "alice")))
    assert {s.labels["key"] for s in samples(metrics)["ccm_cost_usd_total"]} == {"key_01"}


def test_balances_come_from_the_costs_seam() -> None:
    class Ledger(PriceListCosts):
        async def balances(self) -> dict[str, Decimal]:
            return {"key_01": Decimal("4.20")}

    metrics = Metrics(runtime_holder(), costs=Ledger())
    [balance] = samples(metrics)["ccm_balance_usd"]
    assert balance.labels == {"key": "key_01"} and balance.value == 4.2


@pytest.mark.parametrize("client, headers, admin, status", [
    (("127.0.0.1", 5000), {}, None, 200),
    (("10.1.2.3", 5000), {}, None, 403),
    (("127.0.0.1", 5000), {"origin": "https://evil.example"}, None, 403),
    (("127.0.0.1", 5000), {"host": "evil.example"}, None, 403),
    (("10.1.2.3", 5000), {}, "admin", 401),
    (("10.1.2.3", 5000), {"x-api-key": "admin"}, "admin", 200),
    (("10.1.2.3", 5000), {"authorization": "Bearer admin"}, "admin", 200),
])
def test_who_may_scrape(client: tuple[str, int], headers: dict[str, str], admin: str | None, status: int) -> None:
    metrics = Metrics(runtime_holder(), admin_key=admin)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "client": client,
             "headers": [(k.encode(), v.encode()) for k, v in {"host": "127.0.0.1:3456", **headers}.items()]}
    asyncio.run(metrics.app(scope, receive, send))
    assert sent[0]["status"] == status
