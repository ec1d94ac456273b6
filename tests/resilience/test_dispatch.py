"""Dispatch over scripted in-process adapters: retries, fallbacks, breaker, deadline and context skips, fast and
deterministic (no sockets). The same behaviours are proven end to end through `ccm run` in test_faults.py."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from ccm.core.breaker import Breaker
from ccm.core.dispatch import DispatchFailed, Request, dispatch
from ccm.table import RetryPolicy
from tests.resilience.scripted import FAST, REQUEST, build, fail


async def test_first_model_answers() -> None:
    runtime, adapters, chain = build({"a": [], "b": []})
    outcome = await dispatch(runtime, chain, REQUEST)
    assert outcome.model.name == "a-model" and len(outcome.attempts) == 1
    assert not adapters["b"].calls


async def test_retries_then_serves_from_the_same_provider() -> None:
    runtime, adapters, chain = build({"a": [fail(500, "5xx"), fail(529, "529")], "b": []})
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert outcome.model.name == "a-model"
    assert [a.reason for a in outcome.attempts] == ["5xx", "529", None]
    assert not adapters["b"].calls


async def test_falls_back_when_retries_are_exhausted() -> None:
    runtime, adapters, chain = build({"a": [fail(500, "5xx")] * 3, "b": []})
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert outcome.model.name == "b-model"
    assert [(a.provider, a.reason) for a in outcome.attempts] == [("a", "5xx")] * 3 + [("b", None)]
    assert adapters["b"].calls[0].model.name == "b-model"  # each model is sent as itself


async def test_request_fault_stops_the_walk_without_retry() -> None:
    runtime, adapters, chain = build({"a": [fail(400, "4xx", message="messages: field required")], "b": []})
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST)
    assert caught.value.status == 400 and len(caught.value.attempts) == 1
    assert not adapters["b"].calls


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_provider_refusal_falls_back_without_retry(status: int) -> None:
    runtime, adapters, chain = build({"a": [fail(status, "4xx")], "b": []})
    outcome = await dispatch(runtime, chain, REQUEST)
    assert outcome.model.name == "b-model" and len(adapters["a"].calls) == 1


async def test_a_context_overflow_refusal_falls_back() -> None:
    error = fail(400, "4xx", message="This model's maximum context length is 8192 tokens.")
    runtime, _, chain = build({"a": [error], "b": []})
    assert (await dispatch(runtime, chain, REQUEST)).model.name == "b-model"


async def test_protocol_failures_fall_back_without_retry() -> None:
    runtime, adapters, chain = build({"a": [fail(502, "protocol")], "b": []})
    assert (await dispatch(runtime, chain, REQUEST)).model.name == "b-model"
    assert len(adapters["a"].calls) == 1


async def test_all_fail_raises_the_primary_error_listing_what_was_tried() -> None:
    runtime, _, chain = build(
        {"a": [fail(429, "429", retry_after="0")] * 3, "b": [fail(500, "5xx")] * 3}, policy=FAST
    )
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    error = caught.value
    assert (error.status, error.error_type, error.retry_after) == (429, "rate_limit_error", "0")
    assert len(error.attempts) == 6
    assert "tried: a-model (a): 429, 429, 429, b-model (b): 500, 500, 500" in error.message


async def test_long_retry_after_moves_on_at_once_and_opens_the_breaker() -> None:
    runtime, adapters, chain = build({"a": [fail(429, "429", retry_after="30")], "b": []})
    outcome = await dispatch(runtime, chain, REQUEST)
    assert outcome.model.name == "b-model" and len(adapters["a"].calls) == 1
    assert runtime.providers["a"].deployments.state("m").breaker.state == "open"
    again = await dispatch(runtime, chain, REQUEST)
    assert again.model.name == "b-model" and len(adapters["a"].calls) == 1  # skipped: no call


async def test_open_breaker_everywhere_answers_overloaded_with_retry_after() -> None:
    clock = [0.0]
    breaker = Breaker(threshold=1, cooldown=12.5, clock=lambda: clock[0])
    runtime, adapters, chain = build({"a": [fail(500, "5xx")]}, policy=RetryPolicy(attempts=0), breakers={"a": breaker})
    with pytest.raises(DispatchFailed):
        await dispatch(runtime, chain, REQUEST)
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST)
    assert caught.value.status == 529 and caught.value.retry_after == "13"
    assert "circuit open" in caught.value.message and caught.value.attempts == ()
    assert len(adapters["a"].calls) == 1


async def test_the_deadline_bounds_attempts_and_stops_the_walk() -> None:
    runtime, adapters, chain = build({"a": [5.0], "b": []}, total=0.2)
    started = anyio.current_time()
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST)
    assert anyio.current_time() - started < 1.0
    assert caught.value.status == 504 and caught.value.error_type == "timeout_error"
    assert not adapters["b"].calls


async def test_backoff_never_sleeps_past_the_deadline() -> None:
    slow = RetryPolicy(attempts=5, backoff_min=0.3, backoff_max=0.3)
    runtime, adapters, chain = build({"a": [fail(500, "5xx")] * 6}, policy=slow, total=0.5)
    started = anyio.current_time()
    with pytest.raises(DispatchFailed):
        await dispatch(runtime, chain, REQUEST)
    assert anyio.current_time() - started < 0.5
    assert len(adapters["a"].calls) == 2


async def test_context_window_skips_models_that_do_not_fit_before_any_call() -> None:
    runtime, adapters, chain = build({"small": [], "big": []}, contexts={"small": 1000, "big": 200_000})
    outcome = await dispatch(runtime, chain, REQUEST, count_tokens=lambda body: 5000)
    assert outcome.model.name == "big-model" and not adapters["small"].calls
    assert len(outcome.attempts) == 1


async def test_context_window_tries_the_chain_when_nothing_fits() -> None:
    runtime, _, chain = build({"small": [], "big": []}, contexts={"small": 1000, "big": 2000})
    outcome = await dispatch(runtime, chain, REQUEST, count_tokens=lambda body: 5000)
    assert outcome.model.name == "small-model"


async def test_tokens_are_not_counted_when_no_model_declares_a_context() -> None:
    def never(body: Any) -> int:
        raise AssertionError("counted")

    runtime, _, chain = build({"a": [], "b": []})
    assert (await dispatch(runtime, chain, REQUEST, count_tokens=never)).model.name == "a-model"


async def test_every_attempt_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    runtime, _, chain = build({"a": [fail(503, "5xx")] * 3, "b": []})
    with caplog.at_level(logging.INFO, logger="ccm.attempt"):
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "ccm.attempt"]
    assert len(lines) == 4
    assert lines[0].startswith("attempt provider=a model=a-model status=503 latency=") and "retry in" in lines[0]
    assert "retries exhausted" in lines[2]
    assert lines[3].startswith("attempt provider=b model=b-model status=200") and lines[3].endswith("served")


@pytest.mark.parametrize(("stream", "logged"), [(False, logging.DEBUG), (True, logging.INFO)])
async def test_an_answer_at_the_first_try_is_logged_at_info_only_when_it_starts_a_stream(
    caplog: pytest.LogCaptureFixture, stream: bool, logged: int
) -> None:
    runtime, _, chain = build({"a": []})
    with caplog.at_level(logging.DEBUG, logger="ccm.attempt"):
        await dispatch(runtime, chain, Request({"model": "x", "messages": []}, b"{}", {}, stream))
    (record,) = [r for r in caplog.records if r.name == "ccm.attempt"]
    assert record.levelno == logged and record.getMessage().endswith("served")


async def test_a_breaker_opened_by_this_requests_failures_keeps_their_error() -> None:
    breaker = Breaker(threshold=2)
    runtime, adapters, chain = build({"a": [fail(500, "5xx", message="real failure")] * 3}, breakers={"a": breaker})
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert len(adapters["a"].calls) == 2  # the third try was refused by the breaker the second failure opened
    assert caught.value.status == 500
    assert caught.value.message == "real failure"  # one model: no list of what was tried


async def test_a_cancelled_attempt_gives_its_probe_back() -> None:
    clock = [0.0]
    breaker = Breaker(threshold=1, cooldown=1.0, clock=lambda: clock[0])
    runtime, adapters, chain = build({"a": [fail(500, "5xx"), 5.0]}, policy=RetryPolicy(attempts=0),
                                     breakers={"a": breaker})
    with pytest.raises(DispatchFailed):
        await dispatch(runtime, chain, REQUEST)
    clock[0] = 2.0
    with anyio.move_on_after(0.1):  # the client goes away while the probe is in flight
        await dispatch(runtime, chain, REQUEST)
    assert breaker.state == "half_open" and breaker.admit() is not None
