"""Scripted in-process adapters under a real `Runtime`, for dispatch's tests (no sockets): each provider answers
from its script, in order, then with a plain 200.

    Reply            answered at once
    UpstreamError    raised at once
    float            a hang that long, then a timeout
    Slow(s, step)    `step` (a Reply or an UpstreamError) after `s` seconds; a cancelled wait is counted
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from ccm.core.breaker import Breaker
from ccm.core.deployments import ProviderDeployments
from ccm.core.dispatch import Request
from ccm.core.runtime import ProviderRuntime, Runtime
from ccm.errors import UpstreamError
from ccm.providers.base import Call, Reply
from ccm.table import Literal_, Model, Provider, RetryPolicy, RoutingTable, Timeouts
from ccm.upstream.client import Endpoint


@dataclass(frozen=True)
class Slow:
    seconds: float
    then: Reply | UpstreamError


Script = list[Any]  # each item: Reply, UpstreamError, a float (hang that long, then fail as a timeout), or Slow


class ScriptedAdapter:
    def __init__(self, name: str, script: Script) -> None:
        self.name = name
        self.script = script
        self.calls: list[Call] = []
        self.cancelled = 0  # calls cancelled while they waited

    async def send(self, call: Call) -> Reply:
        self.calls.append(call)
        step = self.script.pop(0) if self.script else ok(self.name)
        if isinstance(step, Slow):
            try:
                await anyio.sleep(step.seconds)
            except anyio.get_cancelled_exc_class():
                self.cancelled += 1
                raise
            step = step.then
        if isinstance(step, float):
            await anyio.sleep(step)
            raise UpstreamError(504, "upstream stalled", "timeout", self.name, "timeout_error")
        if isinstance(step, UpstreamError):
            raise step
        return step

    async def aclose(self) -> None:
        return None


def ok(name: str, stream: AsyncIterator[bytes] | None = None) -> Reply:
    return Reply(200, [("content-type", "application/json")], body=None if stream else name.encode(), stream=stream)


def fail(
    status: int, reason: str, provider: str = "", retry_after: str | None = None, message: str = "boom"
) -> UpstreamError:
    return UpstreamError(status, message, reason, provider, retry_after=retry_after)  # type: ignore[arg-type]


FAST = RetryPolicy(attempts=2, backoff_min=0.01, backoff_max=0.05)


def build(
    scripts: dict[str, Script],
    policy: RetryPolicy = FAST,
    total: float = 30.0,
    contexts: dict[str, int] | None = None,
    breakers: dict[str, Breaker] | None = None,
    hedges: dict[str, float] | None = None,
) -> tuple[Runtime, dict[str, ScriptedAdapter], list[Model]]:
    providers: dict[str, Provider] = {}
    runtimes: dict[str, ProviderRuntime] = {}
    adapters: dict[str, ScriptedAdapter] = {}
    models: list[Model] = []
    for name, script in scripts.items():
        provider = Provider(name=name, type="openai", url=Literal_(value="http://127.0.0.1:9"), auth="bearer",
                            timeouts=Timeouts(total=total), retry=policy)
        providers[name] = provider
        adapters[name] = ScriptedAdapter(name, script)
        endpoint = Endpoint(name, "http://127.0.0.1:9", (), provider.timeouts)
        deployments = ProviderDeployments(models=("m",))
        if breakers and name in breakers:
            deployments.state("m").breaker = breakers[name]
        runtimes[name] = ProviderRuntime(provider, endpoint, httpx.AsyncClient(), adapters[name], None, deployments)
        models.append(Model(name=f"{name}-model", provider=name, model="m", context=(contexts or {}).get(name),
                            hedge=(hedges or {}).get(name)))
    table = RoutingTable(version="t", sources=(), providers=providers, models={m.name: m for m in models}, rules=())
    runtime = Runtime(table, runtimes, False, (), {}, b"", {})
    return runtime, adapters, models


REQUEST = Request({"model": "x", "messages": []}, b"{}", {}, False)


