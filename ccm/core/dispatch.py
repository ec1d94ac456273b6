"""Dispatch: walk a routing decision's chain until one model answers, retrying each provider per its policy.

`dispatch(runtime, chain, request)` tries `chain[0]` (the routed target), then its fallbacks in order. Each try
builds a `Call` for that model and sends it through the provider's adapter (so each model is translated for its own
wire format); a reply counts as an answer once the adapter returns it (for streams: once the first upstream event
arrived, so the client has seen nothing yet and a failure before that falls back transparently).

    before any call   a model whose declared `context` is smaller than the request's token count is skipped
                      (the count is the app's cached local estimate; when no model fits, the chain is tried as is
                      and the upstream, which counts exactly, has the last word)
    deployments       each attempt goes to one deployment of the model, chosen among those whose breaker lets
                      it through (`ccm.core.deployments.choose`: weighted or least-busy, preferring a provider with
                      a free concurrency slot); a model with one deployment has nothing to choose
    breaker open      a deployment is skipped without a call (`ccm.core.breaker`); with every deployment open,
                      the model is skipped
    a failure         unless the request itself is at fault, a deployment of the same model not yet tried in this
                      request is tried at once; when every one has failed, the failed deployment's provider policy
                      decides whether to retry (`ccm.core.retry`: backoff with jitter, `retry-after` honoured up to
                      the cap; the retry prefers another deployment); then the next model. The request's fault: a
                      4xx other than 401/402/403/404 (a key or model the provider refuses: another provider may
                      serve), 408/409/429 (transient) and a context-length refusal
    a full provider   `concurrency N` reached: the attempt waits for a slot, in order, within the deadline; the
                      wait is not an upstream failure (the breaker ignores it)
    the deadline      the target provider's `timeout total`, counted from the start of the request, bounds every
                      attempt, every backoff sleep and the relayed stream; a fallback's attempt is also bounded by
                      its own provider's `total`. When it passes, the walk stops with a 504 `timeout_error`.

Every attempt and skip is logged on `ccm.attempt` (provider, model, deployment when there are several, status,
latency, reason, what happens next; at debug for an answer at the first try that is not a stream, which the
request's own line repeats) and kept as an `Attempt` for the request record. The answer carries
`x-ccm-deployment: provider/model`, and `Outcome.model` is the alias as that deployment serves it. When no model
answers, the primary's error is raised (its status, type and `retry-after`, so Claude Code retries as it would
against Anthropic) as a `DispatchFailed` whose message lists what was tried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ccm.core.breaker import Breaker, Ticket
from ccm.core.deployments import DeploymentState, Target, choose, targets
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
    raw: bytes | None  # None when the app rewrote the body (see `Call.raw`)
    headers: Mapping[str, str]
    stream: bool


@dataclass(slots=True)
class Outcome:
    reply: Reply
    model: Model  # the alias that answered, with the provider and upstream model of the deployment that served
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
        served = await _serve_model(targets(runtime, model), model, walk)
        if served is not None:
            reply, target = served
            return Outcome(reply, target.model, walk.attempts)
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


async def _serve_model(choices: tuple[Target, ...], model: Model, walk: _Walk) -> tuple[Reply, Target] | None:
    """Try one model: a deployment per attempt, every untried deployment before a retry, retries per the failed
    deployment's provider policy. The reply and the deployment that gave it; None when the model did not answer."""
    several = len(choices) > 1
    untried = list(choices) if several else []
    target = _first_choice(choices, model, walk) if several else choices[0]
    retries = 0
    tried = False
    while True:
        ticket = target.state.breaker.admit() if target is not None else None
        if target is None or ticket is None:
            _skip_open_circuit(choices, model, walk, tried_before=tried)
            return None
        tried = True
        deadline = _attempt_deadline(target.provider, walk)
        started = time.perf_counter()
        outcome = await _attempt_once(target, walk, ticket, deadline)
        latency = (time.perf_counter() - started) * 1000
        name = target.provider.provider.name
        if isinstance(outcome, Reply):
            walk.attempts.append(Attempt(name, model.name, outcome.status, None, latency))
            # an answer at the first try that is not a stream says nothing the request's own line, a moment later,
            # does not (~20 µs a line): it is logged at debug; a stream's start is news, its request line comes
            # only when it ends
            level = logging.INFO if walk.request.stream or len(walk.attempts) > 1 else logging.DEBUG
            log.log(level, "attempt %s status=%d latency=%.0fms served", target.who, outcome.status, latency)
            outcome.stream = _bounded(outcome.stream, deadline, target.state.breaker, name)
            outcome.headers = [*outcome.headers, ("x-ccm-deployment", target.label)]
            return outcome, target
        error = outcome
        walk.attempts.append(Attempt(name, model.name, error.status, error.reason, latency))
        walk.failed(model, error)
        hold = long_retry_after(target.policy, error)
        if hold is not None:
            target.state.breaker.hold(hold, f"{error.reason} retry-after {hold:g}s")
        if target in untried:
            untried.remove(target)
        spare = choose(untried, model.balance, walk.rand) if untried else None
        delay, why = _next_step(target.policy, retries, error, walk, spare)
        log.info("attempt %s status=%d latency=%.0fms reason=%s: %s (%s)", target.who, error.status, latency,
                 error.reason, why, error.message)
        if delay is None:
            walk.tried.append(_describe_failures(model, walk.attempts))
            return None
        if spare is not None:
            target = spare
            continue
        await anyio.sleep(delay)
        retries += 1
        if several:  # another deployment if one can be tried, else the same again
            others = choose(choices, model.balance, walk.rand, avoid=(target,))
            target = others or choose((target,), model.balance, walk.rand)


def _first_choice(choices: tuple[Target, ...], model: Model, walk: _Walk) -> Target | None:
    for target in choices:
        if not target.state.breaker.available:
            log.info("skip %s reason=breaker_open", target.who)
    return choose(choices, model.balance, walk.rand)


def _next_step(
    policy: RetryPolicy, retries: int, error: UpstreamError, walk: _Walk, spare: Target | None
) -> tuple[float | None, str]:
    """Sleep this long and retry; or (None) move on, setting `walk.stop` when no other model should be tried.
    With a `spare` (a deployment of the same model not tried yet) the retry goes there at once."""
    remaining = walk.deadline - anyio.current_time()
    if remaining <= 0:
        walk.stop = True
        return None, "request deadline passed"
    verdict = next_retry(policy, retries, error, remaining, walk.rand)
    if verdict.delay is None and _request_at_fault(error):
        walk.stop = True
        return None, f"{verdict.why}; the request itself was refused"
    if spare is not None:
        return 0.0, f"trying deployment {spare.label}"
    return verdict.delay, verdict.why


def _skip_open_circuit(choices: tuple[Target, ...], model: Model, walk: _Walk, tried_before: bool) -> None:
    error = _circuit_open(choices, model)
    if len(choices) == 1 or tried_before:  # (else `_first_choice` has logged each deployment's skip)
        for target in choices:
            log.info("skip %s reason=breaker_open (%s)", target.who, error.message)
    if tried_before:
        # this request's own failures opened it: they are the story, and the primary's error stays the real one
        walk.tried.append(f"{_describe_failures(model, walk.attempts)}, then circuit open")
    else:
        where = error.provider if len(choices) == 1 else "every deployment"
        walk.tried.append(f"{model.name} ({where}) skipped: circuit open")
        walk.failed(model, error)


async def _attempt_once(target: Target, walk: _Walk, ticket: Ticket, deadline: float) -> Reply | UpstreamError:
    """One call within the deadline, counted in flight on its deployment and holding a slot of its provider's
    concurrency limit until the reply is closed. The breaker gets its verdict, or its ticket back when the attempt
    was cancelled or never got a slot (ccm's own queue says nothing about the upstream)."""
    request = walk.request
    call = Call(request.body, request.raw, request.headers, request.stream, target.model)
    provider, state = target.provider, target.state
    limiter = provider.limiter
    borrower = object() if limiter is not None else None
    waiting = limiter is not None  # for a free slot
    state.in_flight += 1
    try:
        # anyio's scope, not asyncio's cheaper timeout: the adapters close responses under anyio shields, which a
        # native cancel would cut through (a connection left open on httpx's own transport)
        with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
            if limiter is not None:
                await limiter.acquire_on_behalf_of(borrower)
                waiting = False
            reply = await provider.adapter.send(call)
    except TimeoutError:
        error = _deadline_error(provider, walk, deadline, waiting)
    except UpstreamError as failure:
        error = failure if failure.provider else _with_provider(failure, provider.provider.name)
    except BaseException:
        _give_back(state, None if waiting else limiter, borrower)
        state.breaker.release(ticket)
        raise
    else:
        state.breaker.record(ticket, None)
        reply.aclose = _giving_back_on_close(reply.aclose, state, limiter, borrower)
        return reply
    _give_back(state, None if waiting else limiter, borrower)
    if waiting:
        state.breaker.release(ticket)
    else:
        state.breaker.record(ticket, error)
    return error


def _give_back(state: DeploymentState, limiter: anyio.CapacityLimiter | None, borrower: object) -> None:
    state.in_flight -= 1
    if limiter is not None:
        limiter.release_on_behalf_of(borrower)


def _giving_back_on_close(
    close: Callable[[], Awaitable[None]], state: DeploymentState, limiter: anyio.CapacityLimiter | None,
    borrower: object,
) -> Callable[[], Awaitable[None]]:
    """The reply's `aclose`, which also ends the attempt's count and slot (once, however often it is called)."""
    given_back = False

    async def close_and_give_back() -> None:
        nonlocal given_back
        try:
            await close()
        finally:
            if not given_back:
                given_back = True
                _give_back(state, limiter, borrower)

    return close_and_give_back


def _bounded(
    stream: AsyncIterator[bytes] | None, deadline: float, breaker: Breaker, provider: str
) -> AsyncIterator[bytes] | None:
    """The relayed stream, cut at the deadline; a failure mid-stream counts against the provider's breaker."""
    if stream is None:
        return None

    async def relay() -> AsyncIterator[bytes]:
        # One timer for the whole stream rather than a cancel scope per chunk (~10 µs each, on every event): when the
        # deadline passes while the upstream is awaited, the task is cancelled and that cancellation, ours alone
        # (`uncancel` says whether another is pending), becomes the timeout; between chunks, the flag is enough.
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        waiting = expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if waiting:
                task.cancel()

        timer = asyncio.get_running_loop().call_at(deadline, expire)  # the anyio clock is the loop's
        chunks = stream.__aiter__()
        try:
            while not expired:
                waiting = True
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except UpstreamError as error:
                    breaker.record(Ticket(probe=False), error)
                    log.info("stream provider=%s failed mid-stream reason=%s (%s)", provider, error.reason,
                             error.message)
                    raise
                except asyncio.CancelledError:
                    if not expired or task.uncancel() > cancelling:
                        raise  # not ours, or someone else's too
                    break
                finally:
                    waiting = False
                yield chunk
        finally:
            timer.cancel()
        error = UpstreamError(504, "the stream outlived its total timeout", "timeout", provider, "timeout_error")
        breaker.record(Ticket(probe=False), error)
        raise error

    return relay()


def _attempt_deadline(provider: ProviderRuntime, walk: _Walk) -> float:
    own = provider.provider.timeouts.total
    return walk.deadline if own >= walk.total else min(walk.deadline, anyio.current_time() + own)


def _request_at_fault(error: UpstreamError) -> bool:
    if error.reason != "4xx" or error.status in _PROVIDER_REFUSALS:
        return False
    return _CONTEXT_OVERFLOW.search(error.message) is None


def _circuit_open(choices: tuple[Target, ...], model: Model) -> UpstreamError:
    retry_in = min(t.state.breaker.snapshot().get("retry_in", 0.0) for t in choices)
    wait = max(1, math.ceil(retry_in))
    provider = choices[0].provider.provider.name
    who = f"provider {provider!r}" if len(choices) == 1 else f"every deployment of {model.name!r}"
    return UpstreamError(
        529,
        f"{who} is unavailable after repeated failures (circuit open, next try in {wait}s)",
        "529",
        provider,
        "overloaded_error",
        str(wait),
    )


def _deadline_error(provider: ProviderRuntime, walk: _Walk, deadline: float, waiting: bool) -> UpstreamError:
    name = provider.provider.name
    if deadline >= walk.deadline:
        walk.stop = True
        message = f"no answer within the request's {walk.total:g}s total timeout"
    else:
        message = f"provider {name!r} did not answer within its total timeout"
    if waiting:
        message += f" (every one of its {provider.provider.max_concurrency} concurrent slots was busy)"
    return UpstreamError(504, message, "timeout", name, "timeout_error")


def _with_provider(error: UpstreamError, provider: str) -> UpstreamError:
    error.provider = provider
    return error


def _describe_failures(model: Model, attempts: list[Attempt]) -> str:
    """`sonnet (anthropic): 529, 529 timeout`, or `coder (deepseek: 500; backup: 529)` across deployments: a
    model's failed attempts for the final error message."""
    failures = [a for a in attempts if a.model == model.name and a.reason is not None]
    providers = list(dict.fromkeys(a.provider for a in failures))
    if len(providers) == 1:
        return f"{model.name} ({providers[0]}): " + ", ".join(_status(a) for a in failures)
    per_provider = (f"{p}: " + ", ".join(_status(a) for a in failures if a.provider == p) for p in providers)
    return f"{model.name} ({'; '.join(per_provider)})"


def _status(attempt: Attempt) -> str:
    plain = attempt.reason in ("4xx", "5xx", "429", "529") or attempt.reason == str(attempt.status)
    return str(attempt.status) if plain else f"{attempt.status} {attempt.reason}"
