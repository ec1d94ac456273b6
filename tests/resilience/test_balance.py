"""Load balancing across a model's deployments, over scripted in-process adapters (no sockets, injected random
source): the weighted and least-busy choices, failing over to another deployment before retrying or falling back,
per-deployment breakers, the concurrency limit (spill, then wait) and what the answer says about who served. The
same behaviours are proven end to end through `ccm run` in test_balance_rig.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from itertools import cycle

import anyio
import httpx
import pytest

from ccm.core.deployments import ProviderDeployments
from ccm.core.dispatch import DispatchFailed, choose, dispatch
from ccm.core.runtime import ProviderRuntime, Runtime
from ccm.errors import UpstreamError
from ccm.table import Balance, BreakerPolicy, Deployment, Literal_, Model, Provider, RetryPolicy, RoutingTable, Timeouts
from ccm.upstream.client import Endpoint
from tests.resilience.scripted import REQUEST, Script, ScriptedAdapter, fail, ok

FAST = RetryPolicy(attempts=2, backoff_min=0.01, backoff_max=0.05)


def build(
    scripts: dict[str, Script],
    weights: dict[str, int] | None = None,
    balance: Balance = "weighted",
    concurrency: dict[str, int] | None = None,
    breaker: BreakerPolicy = BreakerPolicy(),
    total: float = 30.0,
    policy: RetryPolicy = FAST,
) -> tuple[Runtime, dict[str, ScriptedAdapter], list[Model]]:
    """Providers a, b, … each with one scripted adapter; model `m` deployed on every one but `spare`, which (when
    scripted) serves the fallback model `f`."""
    providers: dict[str, Provider] = {}
    runtimes: dict[str, ProviderRuntime] = {}
    adapters: dict[str, ScriptedAdapter] = {}
    for name, script in scripts.items():
        limit = (concurrency or {}).get(name)
        provider = Provider(name=name, type="openai", url=Literal_(value="http://127.0.0.1:9"), auth="bearer",
                            timeouts=Timeouts(total=total), retry=policy, max_concurrency=limit)
        providers[name] = provider
        adapters[name] = ScriptedAdapter(name, script)
        endpoint = Endpoint(name, "http://127.0.0.1:9", (), provider.timeouts)
        limiter = anyio.CapacityLimiter(limit) if limit else None
        states = ProviderDeployments(breaker, (f"{name}-up",))
        runtimes[name] = ProviderRuntime(provider, endpoint, httpx.AsyncClient(), adapters[name], limiter, states)
    serving = [n for n in scripts if n != "spare"]
    deployments = tuple(Deployment(provider=n, model=f"{n}-up", weight=(weights or {}).get(n, 1)) for n in serving)
    model = Model(name="m", provider=serving[0], model=f"{serving[0]}-up", balance=balance,
                  deployments=deployments if len(deployments) > 1 else ())
    chain = [model]
    if "spare" in scripts:
        chain.append(Model(name="f", provider="spare", model="spare-up"))
    table = RoutingTable(version="t", sources=(), providers=providers, models={m.name: m for m in chain}, rules=())
    return Runtime(table, runtimes, False, (), {}, b"", {}), adapters, chain


def sequence(*values: float) -> Iterator[float]:
    return cycle(values)


async def test_weights_decide_the_share_of_requests() -> None:
    runtime, adapters, chain = build({"a": [], "b": []}, weights={"a": 3, "b": 1})
    draws = sequence(0.0, 0.3, 0.6, 0.74, 0.75, 0.99)  # a takes [0, 0.75) of the unit interval, b the rest
    for _ in range(6):
        await dispatch(runtime, chain, REQUEST, rand=lambda: next(draws))
    assert (len(adapters["a"].calls), len(adapters["b"].calls)) == (4, 2)


async def test_the_answer_names_the_deployment_that_served_and_the_alias() -> None:
    runtime, adapters, chain = build({"a": [], "b": []})
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.9)
    assert outcome.target.label == "b/b-up"
    assert (outcome.model.name, outcome.model.provider, outcome.model.model) == ("m", "b", "b-up")
    assert adapters["b"].calls[0].model.model == "b-up"  # the adapter is asked for its own upstream model


async def test_a_failed_deployment_hands_over_to_another_at_once_without_a_retry() -> None:
    runtime, adapters, chain = build({"a": [fail(500, "5xx")], "b": []})
    started = anyio.current_time()
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert outcome.target.label == "b/b-up" and len(outcome.attempts) == 2
    assert anyio.current_time() - started < 0.01  # no backoff: another deployment is not a retry


async def test_a_key_refused_on_one_deployment_is_served_by_the_other() -> None:
    runtime, _, chain = build({"a": [fail(401, "4xx")], "b": []})
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert outcome.target.label == "b/b-up"


async def test_when_every_deployment_failed_the_policy_retries_alternating_then_falls_back() -> None:
    runtime, adapters, chain = build({"a": [fail(500, "5xx")] * 3, "b": [fail(503, "5xx")] * 3, "spare": []})
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert outcome.model.name == "f"
    # each deployment once, then `retry 2` (one retry each: a retry prefers the deployment that did not just fail)
    assert [a.provider for a in outcome.attempts] == ["a", "b", "a", "b", "spare"]


async def test_a_request_at_fault_is_not_sent_to_another_deployment() -> None:
    runtime, adapters, chain = build({"a": [fail(400, "4xx")], "b": [], "spare": []})
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert caught.value.status == 400 and not adapters["b"].calls and not adapters["spare"].calls


async def test_all_failing_lists_each_deployments_failures() -> None:
    scripts: dict[str, Script] = {"a": [fail(500, "5xx")], "b": [fail(529, "529")], "spare": [fail(500, "5xx")]}
    runtime, _, chain = build(scripts, policy=RetryPolicy(attempts=0))
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert caught.value.message.endswith("(tried: m (a: 500; b: 529), f (spare): 500)")


async def test_an_open_deployment_is_skipped_while_the_other_serves(caplog: pytest.LogCaptureFixture) -> None:
    runtime, adapters, chain = build({"a": [], "b": []}, weights={"a": 100, "b": 1})
    runtime.providers["a"].deployments.state("a-up").breaker.hold(30, "429 retry-after 30s")
    with caplog.at_level(logging.INFO, logger="ccm.attempt"):
        for _ in range(3):
            outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
            assert outcome.target.label == "b/b-up"
    assert not adapters["a"].calls
    assert "skip provider=a model=m deployment=a/a-up reason=breaker_open" in caplog.text


async def test_the_breaker_is_per_deployment_and_opens_on_the_files_threshold() -> None:
    runtime, adapters, chain = build({"a": [fail(500, "5xx")] * 2, "b": []}, breaker=BreakerPolicy(failures=2))
    for _ in range(3):
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert len(adapters["a"].calls) == 2  # two failures opened a's breaker; the third request never called it
    states = {name: runtime.providers[name].deployments.snapshot()["state"] for name in ("a", "b")}
    assert states == {"a": "open", "b": "closed"}


async def test_with_every_deployment_open_the_model_is_skipped_to_its_fallback() -> None:
    runtime, adapters, chain = build({"a": [], "b": [], "spare": []})
    for name in ("a", "b"):
        runtime.providers[name].deployments.state(f"{name}-up").breaker.hold(20, "429 retry-after 20s")
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert outcome.model.name == "f" and not adapters["a"].calls and not adapters["b"].calls


async def test_with_every_deployment_open_and_no_fallback_the_client_gets_overloaded() -> None:
    runtime, _, chain = build({"a": [], "b": []})
    runtime.providers["a"].deployments.state("a-up").breaker.hold(20, "429 retry-after 20s")
    runtime.providers["b"].deployments.state("b-up").breaker.hold(8, "429 retry-after 8s")
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST)
    assert caught.value.status == 529 and caught.value.retry_after == "8"  # the first deployment back
    assert "every deployment of 'm'" in caught.value.message


async def held_stream() -> AsyncIterator[bytes]:
    yield b"event: message_start\n\n"


async def test_least_busy_prefers_the_idle_deployment() -> None:
    runtime, adapters, chain = build({"a": [ok("a", held_stream())], "b": [ok("b", held_stream())]},
                                     balance="least-busy")
    first = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)  # a tie: the weighted draw picks a
    assert first.target.label == "a/a-up"
    second = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)  # a is busy relaying: b
    assert second.target.label == "b/b-up"
    await first.close()
    third = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.99)  # a is idle again, b still busy
    assert third.target.label == "a/a-up"
    await second.close()
    await third.close()
    assert [runtime.providers[n].deployments.state(f"{n}-up").in_flight for n in "ab"] == [0, 0]


async def test_least_busy_weighs_the_load_by_the_weights() -> None:
    runtime, _, chain = build({"a": [], "b": []}, weights={"a": 4, "b": 1}, balance="least-busy")
    runtime.providers["a"].deployments.state("a-up").in_flight = 3
    runtime.providers["b"].deployments.state("b-up").in_flight = 1
    candidates = runtime.targets_of(chain[0])
    assert choose(candidates, "least-busy", lambda: 0.99).label == "a/a-up"  # 3/4 busy against 1/1


async def test_a_full_provider_spills_to_another_deployment() -> None:
    runtime, adapters, chain = build({"a": [ok("a", held_stream())], "b": []}, weights={"a": 100, "b": 1},
                                     concurrency={"a": 1})
    holding = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert holding.target.label == "a/a-up"
    spilled = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert spilled.target.label == "b/b-up"
    await holding.close()
    back = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert back.target.label == "a/a-up"


async def test_a_full_provider_with_nowhere_to_spill_queues_and_the_wait_is_not_a_failure() -> None:
    runtime, adapters, chain = build({"a": [ok("a", held_stream())]}, concurrency={"a": 1},
                                     breaker=BreakerPolicy(failures=1))
    holding = await dispatch(runtime, chain, REQUEST)
    async with anyio.create_task_group() as group:
        waited: list[float] = []

        async def second() -> None:
            started = anyio.current_time()
            outcome = await dispatch(runtime, chain, REQUEST)
            waited.append(anyio.current_time() - started)
            await outcome.close()

        group.start_soon(second)
        await anyio.sleep(0.2)
        assert len(adapters["a"].calls) == 1  # the second request waits for the slot, not calling
        await holding.close()
    assert len(adapters["a"].calls) == 2 and waited[0] >= 0.2
    assert runtime.providers["a"].deployments.snapshot()["state"] == "closed"


async def test_a_deadline_passing_in_the_queue_is_a_timeout_that_leaves_the_breaker_closed() -> None:
    runtime, adapters, chain = build({"a": [ok("a", held_stream())]}, concurrency={"a": 1}, total=0.3,
                                     breaker=BreakerPolicy(failures=1))
    holding = await dispatch(runtime, chain, REQUEST)
    with pytest.raises(DispatchFailed) as caught:
        await dispatch(runtime, chain, REQUEST)
    assert caught.value.status == 504 and "concurrent slots was busy" in caught.value.message
    assert runtime.providers["a"].deployments.snapshot()["state"] == "closed"
    assert runtime.providers["a"].deployments.state("a-up").in_flight == 1  # only the held one
    await holding.close()
    assert runtime.providers["a"].limiter is not None and runtime.providers["a"].limiter.borrowed_tokens == 0


async def test_a_model_with_one_deployment_calls_choose_never_and_reuses_its_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("choose called for a single deployment")

    monkeypatch.setattr("ccm.core.dispatch.choose", refuse)
    runtime, _, chain = build({"a": [fail(500, "5xx")]})
    outcome = await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert outcome.target.label == "a/a-up" and len(outcome.attempts) == 2
    assert runtime.targets_of(chain[0]) is runtime.targets_of(chain[0])


async def test_a_cancelled_attempt_gives_back_its_count_and_slot() -> None:
    runtime, _, chain = build({"a": [5.0]}, concurrency={"a": 1})
    with anyio.move_on_after(0.1):
        await dispatch(runtime, chain, REQUEST)
    assert runtime.providers["a"].deployments.state("a-up").in_flight == 0
    assert runtime.providers["a"].limiter is not None and runtime.providers["a"].limiter.borrowed_tokens == 0


async def test_a_failed_attempt_gives_back_its_count_and_slot() -> None:
    error = UpstreamError(500, "boom", "5xx", "a")
    runtime, _, chain = build({"a": [error] * 3}, concurrency={"a": 1})
    with pytest.raises(DispatchFailed):
        await dispatch(runtime, chain, REQUEST, rand=lambda: 0.0)
    assert runtime.providers["a"].deployments.state("a-up").in_flight == 0
    assert runtime.providers["a"].limiter is not None and runtime.providers["a"].limiter.borrowed_tokens == 0
