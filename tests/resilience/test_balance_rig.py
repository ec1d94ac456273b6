"""Load balancing through a real `ccm run`, with the `anthropic` SDK as the client: the rig's two fakes are the two
deployments of one alias (`model main = primary/gpt-main weight W, fallback/gpt-backup weight 1`). Each test asserts
who served (`x-ccm-deployment`, and the fakes' own request counts), and the rig checks on exit that nothing leaked.
docs/reliability.md lists these tests in the fault matrix."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.fakes.script import Hang, Reply, Status
from tests.resilience.rig import Rig, wait_for

PRIMARY = "primary/gpt-main"
SECONDARY = "fallback/gpt-backup"

ROUTES = """
breaker {breaker}

provider primary {{
  type    openai
  url     env("PRIMARY_BASE_URL")
  key     env("PRIMARY_API_KEY")
  timeout connect 1s first_byte 5s idle 5s total 20s
  retry   1 backoff 50ms..200ms
  {concurrency}
}}

provider fallback {{
  type    openai
  url     env("FALLBACK_BASE_URL")
  key     env("FALLBACK_API_KEY")
  timeout connect 1s first_byte 5s idle 5s total 20s
  retry   1 backoff 50ms..200ms
}}

model main = primary/gpt-main weight {weight}, fallback/gpt-backup weight 1 {{
  balance    {balance}
  max_output 8k
}}
model solo = primary/gpt-main {{ max_output 8k }}
{extra}
route {{
  default -> main
}}
"""

SLOW = Hang(1.0, then=Reply(text="slow but sure"))


def routes(weight: int = 1, balance: str = "weighted", concurrency: str = "", breaker: str = "5 failures",
           extra: str = "") -> str:
    return ROUTES.format(weight=weight, balance=balance, concurrency=concurrency, breaker=breaker, extra=extra)


def deployment(headers: Any) -> str:
    assert headers["x-ccm-model"] == "main", headers
    return str(headers["x-ccm-deployment"])


def in_background(pool: ThreadPoolExecutor, ask: Callable[[], Any], until: Callable[[], bool]) -> Future[Any]:
    """Start a request and wait until it has reached an upstream."""
    future = pool.submit(ask)
    assert wait_for(until, 3.0), "the request never reached an upstream"
    return future


def test_weights_are_honoured_over_many_requests(tmp_path: Path) -> None:
    with Rig.start(tmp_path, routes=routes(weight=3)) as rig:
        counts = {PRIMARY: 0, SECONDARY: 0}
        for _ in range(200):
            _, headers, _ = rig.ask()
            counts[deployment(headers)] += 1
        # 3:1 over 200 requests: 150 expected on the primary, standard deviation ~6; the bound is 5 of them
        assert 120 <= counts[PRIMARY] <= 180, counts
        assert (len(rig.primary.chat_requests()), len(rig.fallback.chat_requests())) == tuple(counts.values())
        models = {e.json["model"] for e in rig.fallback.chat_requests()}
        assert models == {"gpt-backup"}  # each deployment is asked for its own upstream model


def test_an_open_deployment_is_skipped_while_the_other_serves(tmp_path: Path) -> None:
    with Rig.start(tmp_path, routes=routes(weight=100, breaker="2 failures cooldown 30s")) as rig:
        rig.primary.script(Status(500), Status(500))
        for _ in range(10):  # the primary is picked first almost always; its failures hand over at once
            _, headers, elapsed = rig.ask()
            assert deployment(headers) == SECONDARY and elapsed < 0.5
            if len(rig.primary.chat_requests()) == 2:
                break
        health = rig.health()["breakers"]
        assert health["primary"]["models"]["gpt-main"]["state"] == "open"
        assert health["primary"]["state"] == "open" and 28 < health["primary"]["retry_in"] <= 30
        assert health["fallback"]["models"]["gpt-backup"]["state"] == "closed"
        for _ in range(10):
            _, headers, _ = rig.ask()
            assert deployment(headers) == SECONDARY and headers["x-ccm-attempts"] == "1"
        assert len(rig.primary.chat_requests()) == 2  # skipped without a call while open
        assert "skip provider=primary model=main deployment=primary/gpt-main reason=breaker_open" in rig.logs()


def test_least_busy_prefers_the_idle_deployment_under_concurrent_slow_requests(tmp_path: Path) -> None:
    with Rig.start(tmp_path, routes=routes(balance="least-busy")) as rig:
        rig.primary.script(SLOW, SLOW)
        rig.fallback.script(SLOW, SLOW)

        def busy() -> tuple[int, int]:
            return rig.primary.in_flight, rig.fallback.in_flight

        with ThreadPoolExecutor(4) as pool:
            requests = []
            for started in range(1, 5):
                requests.append(in_background(pool, rig.ask, lambda started=started: sum(busy()) == started))
                primary, fallback = busy()
                assert abs(primary - fallback) <= 1, busy()  # each new request went to the idler deployment
            assert busy() == (2, 2)
            answers = [future.result() for future in requests]
        served = sorted(deployment(headers) for _, headers, _ in answers)
        assert served == sorted([PRIMARY, PRIMARY, SECONDARY, SECONDARY])
        assert all(message.content[0].text == "slow but sure" for message, _, _ in answers)


def test_a_full_provider_spills_to_the_other_deployment(tmp_path: Path) -> None:
    with Rig.start(tmp_path, routes=routes(weight=1000, concurrency="concurrency 1")) as rig:
        rig.primary.script(SLOW)
        with ThreadPoolExecutor(1) as pool:
            holding = in_background(pool, rig.ask, lambda: rig.primary.in_flight == 1)
            for _ in range(3):
                _, headers, elapsed = rig.ask()
                assert deployment(headers) == SECONDARY and elapsed < 0.5  # no wait for the primary's slot
            _, first_headers, _ = holding.result()
        assert deployment(first_headers) == PRIMARY
        _, headers, _ = rig.ask()
        assert deployment(headers) == PRIMARY  # the slot is free again: weights decide


def test_a_full_provider_with_one_deployment_queues_in_order(tmp_path: Path) -> None:
    with Rig.start(tmp_path, routes=routes(concurrency="concurrency 1", breaker="1 failures")) as rig:
        rig.primary.script(SLOW)
        with ThreadPoolExecutor(1) as pool:
            holding = in_background(pool, lambda: rig.ask(model="solo"), lambda: rig.primary.in_flight == 1)
            started = time.monotonic()
            _, headers, elapsed = rig.ask(model="solo")
            holding.result()
        assert headers["x-ccm-model"] == "solo" and headers["x-ccm-deployment"] == PRIMARY
        assert headers["x-ccm-attempts"] == "1" and elapsed > 0.5  # waited for the first request's slot
        assert time.monotonic() - started < 2.0
        assert len(rig.primary.chat_requests()) == 2 and not rig.fallback.chat_requests()
        assert rig.health()["breakers"]["primary"]["state"] == "closed"  # waiting is not a failure


def test_a_reload_keeps_the_state_of_unchanged_deployments(tmp_path: Path) -> None:
    with Rig.start(tmp_path, routes=routes(weight=100, breaker="1 failures cooldown 60s")) as rig:
        rig.primary.script(Status(503))
        for _ in range(10):
            _, headers, _ = rig.ask()
            assert deployment(headers) == SECONDARY
            if rig.primary.chat_requests():
                break
        before = rig.health()
        assert before["breakers"]["primary"]["models"]["gpt-main"]["state"] == "open"

        rig.ccm.route_file.write_text(routes(weight=100, breaker="1 failures cooldown 60s",
                                             extra="model extra = fallback/gpt-extra { max_output 8k }\n"))
        assert wait_for(lambda: rig.health()["version"] != before["version"], 10.0), rig.logs()
        after = rig.health()["breakers"]
        assert after["primary"]["models"]["gpt-main"]["state"] == "open"  # carried across the reload
        assert after["primary"]["opened"] == 1 and "gpt-extra" in after["fallback"]["models"]
        for _ in range(5):
            _, headers, _ = rig.ask()
            assert deployment(headers) == SECONDARY
        assert len(rig.primary.chat_requests()) == 1
