"""The circuit breaker, driven by a fake clock."""

from __future__ import annotations

from ccm.core.breaker import Breaker
from ccm.core.deployments import OTHER_MODELS, ProviderDeployments
from ccm.core.runtime import Runtime, build_runtime
from ccm.errors import UpstreamError
from ccm.table import BreakerPolicy, Deployment, EnvRef, Literal_, Model, Provider, RoutingTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failure(reason: str = "5xx", status: int = 500) -> UpstreamError:
    return UpstreamError(status, "boom", reason=reason, provider="p")  # type: ignore[arg-type]


def breaker(clock: Clock, threshold: int = 3, cooldown: float = 10.0) -> Breaker:
    return Breaker(threshold=threshold, cooldown=cooldown, max_cooldown=40.0, clock=clock)


def fail(b: Breaker, times: int, reason: str = "5xx") -> None:
    for _ in range(times):
        ticket = b.admit()
        assert ticket is not None
        b.record(ticket, failure(reason))


def test_opens_after_consecutive_failures_and_rejects_while_open() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    assert b.state == "closed"
    fail(b, 1)
    assert b.state == "open"
    assert b.admit() is None
    assert b.snapshot() == {
        "state": "open", "consecutive_failures": 3, "opened": 1, "retry_in": 10.0, "last_failure": "5xx"
    }


def test_an_answer_resets_the_count() -> None:
    b = breaker(Clock())
    fail(b, 2)
    ticket = b.admit()
    assert ticket is not None
    b.record(ticket, None)
    fail(b, 2)
    assert b.state == "closed"


def test_a_4xx_is_an_answer_not_a_health_failure() -> None:
    b = breaker(Clock())
    fail(b, 2)
    ticket = b.admit()
    assert ticket is not None
    b.record(ticket, failure("4xx", 400))
    fail(b, 2)
    assert b.state == "closed"


def test_config_failures_say_nothing_about_the_upstream() -> None:
    b = breaker(Clock())
    fail(b, 5, reason="config")
    assert b.state == "closed" and b.snapshot()["consecutive_failures"] == 0


def test_every_health_failure_counts() -> None:
    for reason in ("429", "5xx", "529", "timeout", "connect", "protocol"):
        b = breaker(Clock())
        fail(b, 3, reason=reason)
        assert b.state == "open", reason


def test_half_opens_after_the_cooldown_with_exactly_one_probe() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 9.9
    assert b.admit() is None
    clock.now += 0.1
    assert b.state == "half_open"
    probe = b.admit()
    assert probe is not None and probe.probe
    assert b.admit() is None  # one probe at a time
    b.record(probe, None)
    assert b.state == "closed"
    assert b.snapshot()["consecutive_failures"] == 0
    ticket = b.admit()
    assert ticket is not None and not ticket.probe


def test_a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_maximum() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    cooldowns = []
    for _ in range(4):
        clock.now += 1000
        probe = b.admit()
        assert probe is not None and probe.probe
        b.record(probe, failure("timeout", 504))
        cooldowns.append(b.snapshot()["retry_in"])
    assert cooldowns == [10.0, 20.0, 40.0, 40.0]
    clock.now += 1000
    probe = b.admit()
    assert probe is not None
    b.record(probe, None)
    fail(b, 3)
    assert b.snapshot()["retry_in"] == 10.0  # success resets the cool-down


def test_a_released_probe_frees_the_slot() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 10
    probe = b.admit()
    assert probe is not None
    b.release(probe)
    assert b.state == "half_open"
    again = b.admit()
    assert again is not None and again.probe


def test_releasing_an_ordinary_ticket_does_not_free_the_probe_slot() -> None:
    clock = Clock()
    b = breaker(clock)
    early = b.admit()
    assert early is not None
    fail(b, 3)
    clock.now += 10
    probe = b.admit()
    assert probe is not None
    b.release(early)
    assert b.admit() is None


def test_late_success_from_before_opening_is_ignored() -> None:
    clock = Clock()
    b = breaker(clock)
    early = b.admit()
    assert early is not None
    fail(b, 3)
    b.record(early, None)
    assert b.state == "open"


def test_hold_opens_at_once_for_the_hinted_time() -> None:
    clock = Clock()
    b = breaker(clock)
    b.hold(30.0, "429 retry-after 30s")
    assert b.state == "open" and b.admit() is None
    assert b.snapshot()["retry_in"] == 30.0
    assert b.snapshot()["last_failure"] == "429 retry-after 30s"
    clock.now += 30
    assert b.state == "half_open"


def test_hold_never_shortens_an_open_period() -> None:
    clock = Clock()
    b = breaker(clock)
    b.hold(30.0, "429")
    b.hold(5.0, "429")
    assert b.snapshot()["retry_in"] == 30.0
    assert b.snapshot()["opened"] == 1


def test_hold_is_capped() -> None:
    b = breaker(Clock())
    b.hold(86_400.0, "429")
    assert b.snapshot()["retry_in"] == 600.0


def _table(url_b: str, breaker: BreakerPolicy = BreakerPolicy(), upstream: str = "x") -> RoutingTable:
    providers = {
        name: Provider(name=name, type="anthropic", url=Literal_(value=url), key=EnvRef(name="K"), auth="x-api-key")
        for name, url in (("a", "http://127.0.0.1:1"), ("b", url_b))
    }
    deployments = (Deployment(provider="a", model=upstream), Deployment(provider="b", model=upstream))
    models = {"m": Model(name="m", provider="a", model=upstream, deployments=deployments)}
    return RoutingTable(version="v", sources=(), providers=providers, models=models, rules=(), breaker=breaker)


def _breaker(runtime: Runtime, provider: str, upstream: str = "x") -> Breaker:
    return runtime.providers[provider].deployments.state(upstream).breaker


def test_breaker_state_survives_a_reload_for_unchanged_providers_only() -> None:
    environ = {"K": "secret"}
    first, _ = build_runtime(_table("http://127.0.0.1:2"), environ)
    _breaker(first, "a").hold(30, "429")
    _breaker(first, "b").hold(30, "429")
    same, retired = build_runtime(_table("http://127.0.0.1:2"), environ, previous=first)
    assert _breaker(same, "a").state == "open" and _breaker(same, "b").state == "open"
    assert retired == []
    moved, retired = build_runtime(_table("http://127.0.0.1:3"), environ, previous=same)
    assert _breaker(moved, "a").state == "open"
    assert _breaker(moved, "b").state == "closed"  # a changed provider starts afresh
    assert [p.provider.name for p in retired] == ["b"]
    rekeyed, _ = build_runtime(_table("http://127.0.0.1:3"), {"K": "rotated"}, previous=moved)
    assert _breaker(rekeyed, "a").state == "closed"  # a new key may be exactly what fixes it


def test_a_new_breaker_policy_starts_the_provider_afresh_with_it() -> None:
    first, _ = build_runtime(_table("http://127.0.0.1:2"), {"K": "k"})
    _breaker(first, "a").hold(30, "429")
    stricter = BreakerPolicy(failures=1, cooldown=2.0, max_cooldown=2.0)
    second, retired = build_runtime(_table("http://127.0.0.1:2", stricter), {"K": "k"}, previous=first)
    assert len(retired) == 2 and _breaker(second, "a").state == "closed"
    assert _breaker(second, "a").threshold == 1 and _breaker(second, "a").cooldown == 2.0


def test_a_reload_keeps_the_state_of_deployments_it_keeps_and_adds_the_new_ones() -> None:
    first, _ = build_runtime(_table("http://127.0.0.1:2"), {"K": "k"})
    kept = first.providers["a"].deployments.state("x")
    kept.breaker.hold(30, "429")
    second, _ = build_runtime(_table("http://127.0.0.1:2", upstream="y"), {"K": "k"}, previous=first)
    assert second.providers["a"] is first.providers["a"]
    assert set(second.providers["a"].deployments.snapshot()["models"]) == {"y"}  # x is no longer routed here
    third, _ = build_runtime(_table("http://127.0.0.1:2"), {"K": "k"}, previous=second)
    assert third.providers["a"].deployments.state("x").breaker.state == "closed"  # x came back: a new state


def test_breaker_off_never_opens_but_still_counts() -> None:
    clock = Clock()
    b = Breaker.from_policy(BreakerPolicy(enabled=False), clock)
    fail(b, 50)
    b.hold(600, "429 retry-after 600s")
    assert b.state == "off" and b.available and b.admit() is not None
    assert b.snapshot()["consecutive_failures"] == 50


def test_from_policy_takes_the_files_thresholds() -> None:
    clock = Clock()
    b = Breaker.from_policy(BreakerPolicy(failures=2, cooldown=3.0, max_cooldown=5.0), clock)
    fail(b, 2)
    assert b.state == "open" and not b.available
    clock.now += 3.0
    assert b.available  # half-open: the probe slot is free
    probe = b.admit()
    assert probe is not None and not b.available  # one probe at a time
    b.record(probe, failure())
    clock.now += 5.0
    assert b.state == "half_open"  # the doubled cool-down (6 s) capped at 5 s


def test_health_shows_each_deployment_and_the_worst_on_top() -> None:
    clock = Clock()
    states = ProviderDeployments(BreakerPolicy(failures=1), ("x", "y"), clock)
    ticket = states.state("y").breaker.admit()
    assert ticket is not None
    states.state("y").breaker.record(ticket, failure())
    states.state("x").in_flight = 2
    view = states.snapshot()
    assert view["state"] == "open" and view["in_flight"] == 2
    assert view["models"]["x"] == {"state": "closed", "consecutive_failures": 0, "opened": 0, "in_flight": 2}
    assert view["models"]["y"]["state"] == "open"
    assert OTHER_MODELS not in view["models"]
    assert states.state("unnamed") is states.state("another")  # a direct pick the table does not name: shared
    assert OTHER_MODELS in states.snapshot()["models"]
