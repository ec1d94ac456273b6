"""Dispatch: walk a routing decision's chain until one model answers, retrying each provider per its policy.

`dispatch(runtime, chain, request)` tries `chain[0]` (the routed target), then its fallbacks in order. Each try
builds a `Call` for that model and sends it through the provider's adapter (so each model is translated for its own
wire format); a reply counts as an answer once the adapter returns it (for streams: once the first upstream event
arrived, so the client has seen nothing yet and a failure before that falls back transparently).

    before any call   a model whose declared `context` is smaller than the request's token count is skipped
                      (the count is the app's cached local estimate; when no model fits, the chain is tried as is
                      and the upstream, which counts exactly, has the last word)
    breaker open      the provider is skipped without a call (`ccm.core.breaker`)
    a failure         retried on the same provider when the policy says so (`ccm.core.retry`: backoff with jitter,
                      `retry-after` honoured up to the cap); then, unless the request itself is at fault, the next
                      model. The request's fault: a 4xx other than 401/402/403/404 (a key or model the provider
                      refuses: another provider may serve), 408/409/429 (transient) and a context-length refusal
    the deadline      the target provider's `timeout total`, counted from the start of the request, bounds every
                      attempt, every backoff sleep and the relayed stream; a fallback's attempt is also bounded by
                      its own provider's `total`. When it passes, the walk stops with a 504 `timeout_error`.

Every attempt and skip is logged on `ccm.attempt` (provider, model, status, latency, reason, what happens next)
and kept as an `Attempt` for the request record. When no model answers, the primary's error is raised (its status,
type and `retry-after`, so Claude Code retries as it would against Anthropic) as a `DispatchFailed` whose message
lists what was tried.

The unit a retry and a breaker act on is one provider runtime serving one model (`_serve_model`): a model with
several deployments would pick one of its healthy deployments there, which the route language cannot declare yet.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ccm.core.breaker import Breaker, Ticket
from ccm.core.finish import Attempt
from ccm.core.retry import RandomSource, long_retry_after, next_retry
from ccm.core.runtime import ProviderRuntime, Runtime
from ccm.errors import UpstreamError
from ccm.providers.base import Call, Reply
from ccm.table import Model, RetryPolicy

log = logging.getLogger("ccm.attempt")

TokenCount = Callable[[Mapping[str, Any]], int]

# 4xx answers that say "this provider will not serve you" rather than "this request is wrong".
_PROVIDER_REFUSALS = frozenset({401, 402, 403, 404, 408, 409, 429})
# How providers word "the prompt is longer than this model's context" (Anthropic, OpenAI, vLLM, Gemini, DeepSeek).
_CONTEXT_OVERFLOW = re.compile(
    r"prompt is too long|context[ _]length|context window|maximum context|input (?:token count|is too long)"
    r"|too many (?:input )?tokens|exceeds the (?:maximum|max) (?:number of )?tokens",
    re.IGNORECASE,
)


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


@dataclass(slots=True)
class _Walk:
    """One request's way through its chain."""

    request: Request
    deadline: float  # on the anyio clock
    total: float  # the request's time budget, for messages
    rand: RandomSource
    attempts: list[Attempt] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)  # what the final error message lists, skips included
    primary: str | None = None  # the first model that failed
    primary_error: UpstreamError | None = None  # its latest error (after retries: the freshest `retry-after`)
    stop: bool = False  # the request's own fault, or the deadline passed: no further model is tried

    def failed(self, model: Model, error: UpstreamError) -> None:
        if self.primary is None:
            self.primary = model.name
        if self.primary == model.name:
            self.primary_error = error


async def dispatch(
    runtime: Runtime,
    chain: Sequence[Model],
    request: Request,
    count_tokens: TokenCount | None = None,
    rand: RandomSource = random.random,
) -> Outcome:
    total = runtime.providers[chain[0].provider].provider.timeouts.total
    walk = _Walk(request, anyio.current_time() + total, total, rand)
    for model in _fitting(chain, request.body, count_tokens, walk):
        provider = runtime.providers[model.provider]
        reply = await _serve_model(provider, model, runtime.table.retry_for(model.provider), walk)
        if reply is not None:
            return Outcome(reply, model, walk.attempts)
        if walk.stop:
            break
    assert walk.primary_error is not None  # every model that did not answer recorded why
    raise DispatchFailed(walk.primary_error, walk.attempts, ", ".join(walk.tried) if len(walk.tried) > 1 else "")


def _fitting(
    chain: Sequence[Model], body: Mapping[str, Any], count_tokens: TokenCount | None, walk: _Walk
) -> Sequence[Model]:
    """The chain without the models whose declared context the request does not fit (all of it when none fits)."""
    if count_tokens is None or all(model.context is None for model in chain):
        return chain
    tokens = count_tokens(body)
    fitting = [model for model in chain if model.context is None or tokens <= model.context]
    if not fitting or len(fitting) == len(chain):
        return chain
    for model in chain:
        if model not in fitting:
            log.info("skip provider=%s model=%s reason=context tokens=%d context=%d", model.provider, model.name,
                     tokens, model.context)
            walk.tried.append(f"{model.name} skipped: ~{tokens} tokens exceed its context of {model.context}")
    return fitting


async def _serve_model(provider: ProviderRuntime, model: Model, policy: RetryPolicy, walk: _Walk) -> Reply | None:
    """Try one model on its provider, with the provider's retries; None when it did not answer."""
    name = provider.provider.name
    retries = 0
    while True:
        ticket = provider.breaker.admit()
        if ticket is None:
            _skip_open_circuit(provider, model, walk, tried_before=retries > 0)
            return None
        deadline = _attempt_deadline(provider, walk)
        started = time.perf_counter()
        outcome = await _attempt_once(provider, model, walk, ticket, deadline)
        latency = (time.perf_counter() - started) * 1000
        if isinstance(outcome, Reply):
            walk.attempts.append(Attempt(name, model.name, outcome.status, None, latency))
            log.info("attempt provider=%s model=%s status=%d latency=%.0fms served", name, model.name, outcome.status,
                     latency)
            outcome.stream = _bounded(outcome.stream, deadline, provider.breaker, name)
            return outcome
        error = outcome
        walk.attempts.append(Attempt(name, model.name, error.status, error.reason, latency))
        walk.failed(model, error)
        hold = long_retry_after(policy, error)
        if hold is not None:
            provider.breaker.hold(hold, f"{error.reason} retry-after {hold:g}s")
        delay, why = _next_step(policy, retries, error, walk)
        log.info(
            "attempt provider=%s model=%s status=%d latency=%.0fms reason=%s: %s (%s)",
            name, model.name, error.status, latency, error.reason, why, error.message,
        )
        if delay is None:
            walk.tried.append(_describe_failures(model, name, walk.attempts))
            return None
        await anyio.sleep(delay)
        retries += 1


def _next_step(policy: RetryPolicy, retries: int, error: UpstreamError, walk: _Walk) -> tuple[float | None, str]:
    """Sleep this long and retry; or (None) move on, setting `walk.stop` when no other model should be tried."""
    remaining = walk.deadline - anyio.current_time()
    if remaining <= 0:
        walk.stop = True
        return None, "request deadline passed"
    verdict = next_retry(policy, retries, error, remaining, walk.rand)
    if verdict.delay is None and _request_at_fault(error):
        walk.stop = True
        return None, f"{verdict.why}; the request itself was refused"
    return verdict.delay, verdict.why


def _skip_open_circuit(provider: ProviderRuntime, model: Model, walk: _Walk, tried_before: bool) -> None:
    name = provider.provider.name
    error = _circuit_open(name, provider.breaker)
    log.info("skip provider=%s model=%s reason=breaker_open (%s)", name, model.name, error.message)
    if tried_before:
        # this request's own failures opened it: they are the story, and the primary's error stays the real one
        walk.tried.append(f"{_describe_failures(model, name, walk.attempts)}, then circuit open")
    else:
        walk.tried.append(f"{model.name} ({name}) skipped: circuit open")
        walk.failed(model, error)


async def _attempt_once(
    provider: ProviderRuntime, model: Model, walk: _Walk, ticket: Ticket, deadline: float
) -> Reply | UpstreamError:
    """One call within the deadline; the breaker gets its verdict (or its ticket back when the call is cancelled)."""
    request = walk.request
    call = Call(request.body, request.raw, request.headers, request.stream, model)
    try:
        with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
            reply = await _attempt(provider, call)
    except TimeoutError:
        error = _deadline_error(provider.provider.name, walk, deadline)
    except UpstreamError as failure:
        error = failure if failure.provider else _with_provider(failure, provider.provider.name)
    except BaseException:
        provider.breaker.release(ticket)
        raise
    else:
        provider.breaker.record(ticket, None)
        return reply
    provider.breaker.record(ticket, error)
    return error


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


def _bounded(
    stream: AsyncIterator[bytes] | None, deadline: float, breaker: Breaker, provider: str
) -> AsyncIterator[bytes] | None:
    """The relayed stream, cut at the deadline; a failure mid-stream counts against the provider's breaker."""
    if stream is None:
        return None

    async def relay() -> AsyncIterator[bytes]:
        chunks = stream.__aiter__()
        while True:
            try:
                with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                error = UpstreamError(
                    504, "the stream outlived its total timeout", "timeout", provider, "timeout_error"
                )
                breaker.record(Ticket(probe=False), error)
                raise error from None
            except UpstreamError as error:
                breaker.record(Ticket(probe=False), error)
                log.info("stream provider=%s failed mid-stream reason=%s (%s)", provider, error.reason, error.message)
                raise
            yield chunk

    return relay()


def _attempt_deadline(provider: ProviderRuntime, walk: _Walk) -> float:
    own = provider.provider.timeouts.total
    return walk.deadline if own >= walk.total else min(walk.deadline, anyio.current_time() + own)


def _request_at_fault(error: UpstreamError) -> bool:
    if error.reason != "4xx" or error.status in _PROVIDER_REFUSALS:
        return False
    return _CONTEXT_OVERFLOW.search(error.message) is None


def _circuit_open(provider: str, breaker: Breaker) -> UpstreamError:
    retry_in = breaker.snapshot().get("retry_in", 0.0)
    wait = max(1, math.ceil(retry_in))
    return UpstreamError(
        529,
        f"provider {provider!r} is unavailable after repeated failures (circuit open, next try in {wait}s)",
        "529",
        provider,
        "overloaded_error",
        str(wait),
    )


def _deadline_error(provider: str, walk: _Walk, deadline: float) -> UpstreamError:
    if deadline >= walk.deadline:
        walk.stop = True
        message = f"no answer within the request's {walk.total:g}s total timeout"
    else:
        message = f"provider {provider!r} did not answer within its total timeout"
    return UpstreamError(504, message, "timeout", provider, "timeout_error")


def _with_provider(error: UpstreamError, provider: str) -> UpstreamError:
    error.provider = provider
    return error


def _describe_failures(model: Model, provider: str, attempts: list[Attempt]) -> str:
    """`sonnet (anthropic): 529, 529 timeout`: a model's failed attempts for the final error message."""
    failures = [a for a in attempts if a.provider == provider and a.model == model.name and a.reason is not None]
    return f"{model.name} ({provider}): " + ", ".join(_status(a) for a in failures)


def _status(attempt: Attempt) -> str:
    plain = attempt.reason in ("4xx", "5xx", "429", "529") or attempt.reason == str(attempt.status)
    return str(attempt.status) if plain else f"{attempt.status} {attempt.reason}"
