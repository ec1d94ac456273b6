"""`hedge after N`: a model that has not answered for N seconds has the rest of its chain asked beside it; the first
answer is relayed, the other side cancelled and kept in the record as `hedged`. Scripted adapters, no sockets; the
same through `ccm run` and real connections in test_faults.py."""

from __future__ import annotations

import anyio
import pytest

from ccm.core.dispatch import HEDGED_STATUS, DispatchFailed, dispatch
from tests.resilience.scripted import REQUEST, Slow, build, fail, ok

HEDGE = 0.1


async def test_a_hung_primary_is_hedged_to_the_next_model_and_cancelled_when_it_answers() -> None:
    runtime, adapters, chain = build({"a": [Slow(5.0, ok("a"))], "b": []}, hedges={"a": HEDGE})
    started = anyio.current_time()
    answer = await dispatch(runtime, chain, REQUEST)
    elapsed = anyio.current_time() - started
    assert answer.model.name == "b-model"
    assert HEDGE <= elapsed < HEDGE + 0.5
    assert adapters["a"].cancelled == 1  # the hung call was cancelled, not left running
    assert [(a.provider, a.status, a.reason) for a in answer.attempts] == [
        ("a", HEDGED_STATUS, "hedged"), ("b", 200, None),  # the answering attempt stays the last
    ]
    assert runtime.providers["a"].deployments.state("m").in_flight == 0
    await answer.close()
    assert runtime.providers["b"].deployments.state("m").in_flight == 0


async def test_a_primary_that_answers_before_the_hedge_is_due_asks_no_one_else() -> None:
    runtime, adapters, chain = build({"a": [Slow(HEDGE / 4, ok("a"))], "b": []}, hedges={"a": HEDGE})
    answer = await dispatch(runtime, chain, REQUEST)
    assert answer.model.name == "a-model" and len(answer.attempts) == 1
    await anyio.sleep(HEDGE * 2)
    assert not adapters["b"].calls


async def test_the_primary_answering_first_after_the_hedge_started_wins_and_the_hedge_is_cancelled() -> None:
    runtime, adapters, chain = build({"a": [Slow(HEDGE * 2, ok("a"))], "b": [Slow(5.0, ok("b"))]},
                                     hedges={"a": HEDGE})
    answer = await dispatch(runtime, chain, REQUEST)
    assert answer.model.name == "a-model"
    assert len(adapters["b"].calls) == 1 and adapters["b"].cancelled == 1
    assert [(a.provider, a.reason) for a in answer.attempts] == [("b", "hedged"), ("a", None)]
    assert runtime.providers["b"].deployments.state("m").in_flight == 0


async def test_a_primary_failing_before_the_hedge_is_due_hands_over_at_once() -> None:
    runtime, _, chain = build({"a": [fail(500, "5xx")] * 3, "b": []}, hedges={"a": 5.0})
    started = anyio.current_time()
    answer = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert anyio.current_time() - started < 1.0
    assert answer.model.name == "b-model"
    assert [a.reason for a in answer.attempts] == ["5xx", "5xx", "5xx", None]


async def test_a_failing_hedge_leaves_the_primary_to_answer() -> None:
    runtime, _, chain = build({"a": [Slow(HEDGE * 3, ok("a"))], "b": [fail(500, "5xx")] * 3}, hedges={"a": HEDGE})
    answer = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert answer.model.name == "a-model"
    assert [(a.provider, a.reason) for a in answer.attempts] == [("b", "5xx")] * 3 + [("a", None)]


async def test_the_requests_own_fault_on_one_side_ends_both() -> None:
    refused = fail(400, "4xx", message="messages.0: bad block")
    runtime, adapters, chain = build({"a": [Slow(5.0, ok("a"))], "b": [refused]}, hedges={"a": HEDGE})
    started = anyio.current_time()
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST)
    assert anyio.current_time() - started < 1.0
    assert caught.value.status == 400 and adapters["a"].cancelled == 1
    assert [(a.provider, a.reason) for a in caught.value.attempts] == [("b", "4xx"), ("a", "hedged")]


async def test_when_both_sides_fail_the_client_gets_the_hedged_models_error() -> None:
    primary = fail(429, "429", retry_after="7", message="slow down")
    runtime, _, chain = build({"a": [Slow(HEDGE * 3, primary)], "b": [fail(503, "5xx")] * 3},
                              hedges={"a": HEDGE})
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    error = caught.value
    # b failed first in time, but a heads the chain: its error (and its retry-after) is the one Claude Code sees
    assert (error.status, error.retry_after) == (429, "7")
    assert error.message.startswith("slow down (tried: ")


async def test_a_hedge_in_the_middle_of_a_chain_races_what_follows_it() -> None:
    runtime, adapters, chain = build({"a": [fail(500, "5xx")] * 3, "b": [Slow(5.0, ok("b"))], "c": []},
                                     hedges={"b": HEDGE})
    answer = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert answer.model.name == "c-model" and adapters["b"].cancelled == 1
    assert [(a.provider, a.reason) for a in answer.attempts] == [("a", "5xx")] * 3 + [("b", "hedged"), ("c", None)]


async def test_the_requests_deadline_bounds_both_sides() -> None:
    runtime, _, chain = build({"a": [Slow(5.0, ok("a"))], "b": [Slow(5.0, ok("b"))]}, total=0.3,
                              hedges={"a": HEDGE})
    started = anyio.current_time()
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST)
    assert anyio.current_time() - started < 1.0
    assert caught.value.status == 504


async def test_a_client_leaving_mid_race_cancels_both_sides_and_gives_their_slots_back() -> None:
    runtime, adapters, chain = build({"a": [Slow(5.0, ok("a"))], "b": [Slow(5.0, ok("b"))]}, hedges={"a": HEDGE})
    with anyio.move_on_after(HEDGE * 3):
        await dispatch(runtime, chain, REQUEST)
    assert adapters["a"].cancelled == 1 and adapters["b"].cancelled == 1
    assert all(runtime.providers[p].deployments.state("m").in_flight == 0 for p in "ab")
