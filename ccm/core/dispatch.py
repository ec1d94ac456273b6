"""Dispatch: walk a routing decision's chain until one model answers.

`dispatch(runtime, chain, request)` tries `chain[0]` (the routed target), then its fallbacks in order. Each try
builds a `Call` for that model and sends it through the provider's adapter; a reply counts as an answer once the
adapter returns it (for streams: once the first upstream event arrived, so the client has seen nothing yet).

    failure reason                       what happens
    429 / 5xx / 529 / timeout / connect  the next model in the chain is tried
    config (a provider's key is unset)   the next model is tried: that provider cannot answer anyone
    4xx / protocol                       the walk stops: the request itself is the problem, another model won't fix it

When no model answers, the primary's error is raised (its status, type and `retry-after`, so Claude Code retries
as it would against Anthropic) as a `DispatchFailed` whose message lists what was tried and which carries the
attempts for the request record. Retries with backoff and circuit breakers belong here too: they wrap `_attempt`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


from ccm.core.finish import Attempt
from ccm.core.runtime import ProviderRuntime, Runtime
from ccm.errors import UpstreamError
from ccm.providers.base import Call, Reply
from ccm.table import Model

FALLBACK_REASONS = frozenset({"429", "5xx", "529", "timeout", "connect", "config"})


@dataclass(frozen=True, slots=True)
class Request:
    """What every attempt of one client request shares (the body is never mutated: each attempt reuses it)."""

    body: dict[str, Any]
    raw: bytes
    headers: Mapping[str, str]
    stream: bool


@dataclass(slots=True)
class Outcome:
    reply: Reply
    model: Model
    attempts: list[Attempt] = field(default_factory=list)


class DispatchFailed(UpstreamError):
    """Every model tried failed: the primary's error, with the attempts made."""

    def __init__(self, primary: UpstreamError, attempts: list[Attempt], tried: str) -> None:
        message = f"{primary.message} (tried: {tried})" if tried else primary.message
        super().__init__(
            primary.status, message, primary.reason, primary.provider, primary.error_type, primary.retry_after
        )
        self.attempts = attempts


async def dispatch(runtime: Runtime, chain: Sequence[Model], request: Request) -> Outcome:
    attempts: list[Attempt] = []
    errors: list[UpstreamError] = []
    for model in chain:
        provider = runtime.providers[model.provider]
        call = Call(request.body, request.raw, request.headers, request.stream, model)
        started = time.perf_counter()
        try:
            reply = await _attempt(provider, call)
        except UpstreamError as error:
            attempts.append(Attempt(model.provider, model.name, error.status, error.reason, _ms(started)))
            errors.append(error)
            if error.reason not in FALLBACK_REASONS:
                break
            continue
        attempts.append(Attempt(model.provider, model.name, reply.status, None, _ms(started)))
        return Outcome(reply, model, attempts)
    raise DispatchFailed(errors[0], attempts, _tried(attempts) if len(attempts) > 1 else "")


async def _attempt(provider: ProviderRuntime, call: Call) -> Reply:
    """One try on one provider, holding a slot of its concurrency limit until the reply is closed."""
    if provider.limiter is None:
        return await provider.adapter.send(call)
    borrower = object()
    await provider.limiter.acquire_on_behalf_of(borrower)
    try:
        reply = await provider.adapter.send(call)
    except BaseException:
        provider.limiter.release_on_behalf_of(borrower)
        raise
    close_upstream = reply.aclose
    released = False

    async def close_and_release() -> None:
        nonlocal released
        try:
            await close_upstream()
        finally:
            if not released:
                released = True
                provider.limiter.release_on_behalf_of(borrower)  # type: ignore[union-attr]

    reply.aclose = close_and_release
    return reply


def _tried(attempts: list[Attempt]) -> str:
    return ", ".join(f"{a.model} ({a.provider}) {a.status} {a.reason}" for a in attempts)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000

