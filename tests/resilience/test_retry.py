"""Retry policy evaluation, deterministic: the random source and the wall clock are injected."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from ccm.core.retry import backoff_delay, next_retry, parse_retry_after, retry_class
from ccm.errors import UpstreamError
from ccm.table import RetryPolicy

POLICY = RetryPolicy(attempts=3, backoff_min=0.5, backoff_max=8.0)


def error(status: int, reason: str, retry_after: str | None = None) -> UpstreamError:
    return UpstreamError(status, "boom", reason=reason, provider="p", retry_after=retry_after)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (429, "429", "429"),
        (500, "5xx", "5xx"),
        (529, "529", "529"),
        (529, "5xx", "5xx"),  # a 503, shown to the client as overloaded
        (504, "timeout", "timeout"),
        (502, "connect", "connect"),
        (408, "4xx", "timeout"),
        (409, "4xx", "5xx"),
        (400, "4xx", None),
        (401, "4xx", None),
        (404, "4xx", None),
        (413, "4xx", None),
        (502, "protocol", None),
        (502, "truncated", "5xx"),  # an answer that ended early: retried like a server error
        (424, "config", None),
    ],
)
def test_retry_class_maps_failures_to_the_policy_vocabulary(status: int, reason: str, expected: str | None) -> None:
    assert retry_class(error(status, reason)) == expected


def test_backoff_grows_exponentially_within_the_bounds() -> None:
    lowest = [backoff_delay(POLICY, n, rand=lambda: 0.0) for n in range(6)]
    highest = [backoff_delay(POLICY, n, rand=lambda: 1.0) for n in range(6)]
    assert lowest == [0.5] * 6
    assert highest == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_jitter_spreads_uniformly() -> None:
    assert backoff_delay(POLICY, 1, rand=lambda: 0.5) == pytest.approx(1.25)


def test_backoff_with_min_above_max_stays_at_max() -> None:
    policy = RetryPolicy(backoff_min=5.0, backoff_max=1.0)
    assert backoff_delay(policy, 0, rand=lambda: 0.7) == 1.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0), (" 0.25 ", 0.25), ("0", 0.0), ("-4", 0.0),
        ("soon", None), ("", None), (None, None), ("nan", None), ("inf", None),
    ],
)
def test_parse_retry_after_numbers(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date_is_relative_to_the_wall_clock() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), wall_clock=lambda: now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), wall_clock=lambda: now) == 0.0


def test_retryable_failure_gets_a_jittered_backoff() -> None:
    verdict = next_retry(POLICY, 0, error(500, "5xx"), remaining=60, rand=lambda: 0.5)
    assert verdict.delay == pytest.approx(0.75)


def test_non_retryable_failure_moves_on() -> None:
    verdict = next_retry(POLICY, 0, error(400, "4xx"), remaining=60)
    assert verdict.delay is None and "not retried" in verdict.why


def test_failure_outside_the_policy_moves_on() -> None:
    policy = RetryPolicy(on=("429",))
    assert next_retry(policy, 0, error(500, "5xx"), remaining=60).delay is None
    assert next_retry(policy, 0, error(429, "429"), remaining=60, rand=lambda: 0.0).delay == 0.5


def test_retries_stop_after_the_policy_attempts() -> None:
    assert next_retry(POLICY, 2, error(500, "5xx"), remaining=60, rand=lambda: 0.0).delay == 0.5
    verdict = next_retry(POLICY, 3, error(500, "5xx"), remaining=60)
    assert verdict.delay is None and "exhausted" in verdict.why


def test_retry_zero_means_one_try() -> None:
    assert next_retry(RetryPolicy(attempts=0), 0, error(529, "529"), remaining=60).delay is None


def test_retry_after_is_honoured_exactly_instead_of_backoff() -> None:
    assert next_retry(POLICY, 0, error(429, "429", "2"), remaining=60, rand=lambda: 0.99).delay == 2.0
    assert next_retry(POLICY, 0, error(429, "429", "0"), remaining=60).delay == 0.0


def test_retry_after_beyond_the_cap_moves_on_at_once() -> None:
    verdict = next_retry(POLICY, 0, error(429, "429", "30"), remaining=600)
    assert verdict.delay is None and "exceeds" in verdict.why


def test_a_retry_never_outlives_the_deadline() -> None:
    assert next_retry(POLICY, 0, error(429, "429", "2"), remaining=2.0).delay is None
    assert next_retry(POLICY, 0, error(500, "5xx"), remaining=0.6, rand=lambda: 0.9).delay is None
    assert next_retry(POLICY, 0, error(500, "5xx"), remaining=0.6, rand=lambda: 0.0).delay == 0.5


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
        ({}, None),
    ],
)
def test_upstream_hints_reach_the_policy_in_seconds(headers: dict[str, str], hint: float | None) -> None:
    from ccm.core.retry import retry_after
    from ccm.upstream.errors import upstream_error

    assert retry_after(upstream_error("p", 429, b"{}", headers)) == hint
