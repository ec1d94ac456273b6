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
    a hedge           a model with `hedge after N` that has not answered for N seconds has the rest of the chain
                      walked beside it (`_hedged`): the first answer wins, the other side is cancelled and kept as
                      a `hedged` attempt (status 499); the answering attempt is the record's last
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

import functools
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ccm.core.breaker import Ticket
from ccm.core.deployments import DeploymentState
from ccm.core.record import Attempt
from ccm.core.retry import RandomSource, long_retry_after, next_retry
from ccm.core.runtime import ProviderRuntime, Runtime, Target
from ccm.errors import UpstreamError
from ccm.frozen import frozen
from ccm.providers.base import Call, Reply
from ccm.table import Balance, Model, RetryPolicy
from ccm.upstream.errors import Redactor, classified, located, timed_out, with_quirk_hint
from ccm.upstream.http1 import RESENDS

log = logging.getLogger("ccm.attempt")

TokenCount = Callable[[Mapping[str, Any]], int]

# The status of an attempt ccm cancelled because the other side of a hedge answered first: nginx's "client closed
# request", the client being ccm
HEDGED_STATUS = 499

# 4xx answers that say "this provider will not serve you" rather than "this request is wrong".
_PROVIDER_REFUSALS = frozenset({401, 402, 403, 404, 408, 409, 429})
# How providers word "the prompt is longer than this model's context" (Anthropic, OpenAI, vLLM, Gemini, DeepSeek).
_CONTEXT_OVERFLOW = re.compile(
    r"prompt is too long|context[ _]length|context window|maximum context|input (?:token count|is too long)"
    r"|too many (?:input )?tokens|exceeds the (?:maximum|max) (?:number of )?tokens",
    re.IGNORECASE,
)


@frozen
class Request:
    """What every attempt of one client request shares (the body is never mutated: each attempt reuses it)."""

    body: dict[str, Any]
    raw: bytes | None  # None when the app rewrote the body (see `Call.raw`)
    headers: Mapping[str, str]
    stream: bool
    input_tokens: int | None = None  # the local count, when the app made one (adapters report it in message_start)


class Answer:
    """The reply that answered, from which deployment, by when it must be relayed, and the attempts it took.
    `close()` closes the reply (shielded from cancellation) and then ends the attempt's count and concurrency slot;
    it does so once, however often it is called."""

    __slots__ = ("reply", "target", "deadline", "attempts", "_release")

    def __init__(
        self, reply: Reply, target: Target, deadline: float, attempts: tuple[Attempt, ...],
        release: Callable[[], None],
    ) -> None:
        self.reply = reply
        self.target = target
        self.deadline = deadline  # on the anyio clock: the relayed stream's own deadline
        self.attempts = attempts
        self._release: Callable[[], None] | None = release

    @property
    def model(self) -> Model:
        """The alias that answered, with the provider and upstream model of the deployment that served."""
        return self.target.model

    async def close(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            if self.reply.stream is not None:  # a plain reply's upstream was released as its body was read
                with anyio.CancelScope(shield=True):
                    await self.reply.aclose()
        finally:
            release()


class DispatchFailed(UpstreamError):
    """Every model tried failed: the primary's error, with the attempts made."""

    def __init__(self, primary: UpstreamError, attempts: tuple[Attempt, ...], tried: str) -> None:
        message = f"{primary.message} (tried: {tried})" if tried else primary.message
        super().__init__(
            primary.status, message, primary.reason, primary.provider, primary.error_type, primary.retry_after
        )
        self.attempts = attempts


@dataclass(slots=True)
class _Walk:
    """One request's way through its chain."""

    request: Request
    chain: Sequence[Model]
    deadline: float  # on the anyio clock
    total: float  # the request's time budget, for messages
    rand: RandomSource
    attempts: list[Attempt] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)  # what the final error message lists, skips included
    primary: str | None = None  # the first model of the chain that failed
    primary_error: UpstreamError | None = None  # its latest error (after retries: the freshest `retry-after`)
    stop: bool = False  # the request's own fault, or the deadline passed: no further model is tried
    hedged: bool = False  # a hedge's second side was started
    race_decided: bool = False  # a hedge's race is over: the side still in flight is being cancelled

    def failed(self, model: Model, error: UpstreamError) -> None:
        # first in the chain, not in time: beside a hedge, a model further down may fail before the one hedged
        if self.primary is None or self.primary != model.name and self._earlier(model.name, self.primary):
            self.primary = model.name
        if self.primary == model.name:
            self.primary_error = error

    def _earlier(self, name: str, than: str) -> bool:
        names = [m.name for m in self.chain]
        return name in names and than in names and names.index(name) < names.index(than)


async def dispatch(
    runtime: Runtime,
    chain: Sequence[Model],
    request: Request,
    count_tokens: TokenCount | None = None,
    rand: RandomSource = random.random,
) -> Answer:
    total = runtime.providers[chain[0].provider].provider.timeouts.total
    walk = _Walk(request, chain, anyio.current_time() + total, total, rand)
    answer = await _walk_chain(runtime, _fitting(chain, request.body, count_tokens, walk), walk)
    if answer is not None:
        return answer
    assert walk.primary_error is not None  # every model that did not answer recorded why
    tried = ", ".join(walk.tried) if len(walk.tried) > 1 else ""
    raise DispatchFailed(walk.primary_error, tuple(walk.attempts), tried)


async def _walk_chain(runtime: Runtime, models: Sequence[Model], walk: _Walk) -> Answer | None:
    """Each model in turn until one answers; a model with a `hedge` races the rest of the chain (`_hedged`)."""
    for index, model in enumerate(models):
        if model.hedge is not None and index + 1 < len(models):
            return await _hedged(runtime, model, models[index + 1:], walk)
        answer = await _serve_model(runtime.targets_of(model), model, walk, runtime.redactor)
        if answer is not None or walk.stop:
            return answer
    return None


async def _hedged(runtime: Runtime, model: Model, rest: Sequence[Model], walk: _Walk) -> Answer | None:
    """`model`, and once it has not answered for `model.hedge` seconds, the `rest` of the chain beside it: the first
    answer wins and the other side is cancelled (its attempt in flight is kept as `hedged`). A side that fails
    leaves the other to answer; when `model` fails before the hedge is due, the rest is walked at once, as without
    a hedge. Both sides share the walk: its deadline, its attempts, and `stop` (the request's own fault ends both)."""
    assert model.hedge is not None
    won: list[Answer] = []
    primary_over = anyio.Event()

    async def side(serve: Callable[[], Awaitable[Answer | None]], over: anyio.Event | None) -> None:
        answer = await serve()
        if over is not None:
            over.set()
        if answer is None:
            if walk.stop:  # the request's own fault, or its deadline: the other side ends too
                walk.race_decided = True
                group.cancel_scope.cancel()
        elif won:  # both answered in the same moment: the first is relayed
            await answer.close()
        else:
            won.append(answer)
            walk.race_decided = True
            group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(side, functools.partial(_serve_model, runtime.targets_of(model), model, walk,
                                                 runtime.redactor), primary_over)
        with anyio.move_on_after(model.hedge):
            await primary_over.wait()
        if not won and not walk.stop:  # (else the group is cancelled: nothing more to start)
            if not primary_over.is_set():
                walk.hedged = True
                log.info("hedge model=%s no answer after %gs: asking %s too", model.name, model.hedge,
                         rest[0].name)
            group.start_soon(side, functools.partial(_walk_chain, runtime, rest, walk), None)
    if not won:
        return None
    answer = won[0]
    own = answer.attempts[-1]  # the answering attempt stays the last, after the cancelled side's
    answer.attempts = (*(a for a in walk.attempts if a is not own), own)
    return answer


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


async def _serve_model(
    choices: tuple[Target, ...], model: Model, walk: _Walk, redactor: Redactor
) -> Answer | None:
    """Try one model: a deployment per attempt, every untried deployment before a retry, retries per the failed
    deployment's provider policy. The answer; None when the model did not answer."""
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
        resends = RESENDS.set(0)
        name, upstream_model = target.provider.provider.name, target.model.model
        try:
            outcome = await _attempt_once(target, walk, ticket, deadline, redactor)
        except anyio.get_cancelled_exc_class():
            if walk.race_decided:  # (else the client left, and nobody reads the walk again)
                latency = (time.perf_counter() - started) * 1000
                walk.attempts.append(Attempt(name, model.name, upstream_model, HEDGED_STATUS, "hedged", latency,
                                             RESENDS.get() > 0))
                log.info("attempt %s status=%d latency=%.0fms reason=hedged: cancelled, the other side of the "
                         "hedge %s", target.who, HEDGED_STATUS, latency,
                         "ended the request" if walk.stop else "answered first")
            raise
        finally:
            resent = RESENDS.get() > 0
            RESENDS.reset(resends)
        latency = (time.perf_counter() - started) * 1000
        if not isinstance(outcome, UpstreamError):
            reply, release = outcome
            walk.attempts.append(Attempt(name, model.name, upstream_model, reply.status, None, latency, resent))
            # an answer at the first try that is not a stream says nothing the request's own line, a moment later,
            # does not (~20 µs a line): it is logged at debug; a stream's start is news, its request line comes
            # only when it ends
            level = logging.INFO if walk.request.stream or len(walk.attempts) > 1 or walk.hedged else logging.DEBUG
            log.log(level, "attempt %s status=%d latency=%.0fms served", target.who, reply.status, latency)
            return Answer(reply, target, deadline, tuple(walk.attempts), release)
        error = outcome
        walk.attempts.append(Attempt(name, model.name, upstream_model, error.status, error.reason, latency, resent))
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


async def _attempt_once(
    target: Target, walk: _Walk, ticket: Ticket, deadline: float, redactor: Redactor
) -> tuple[Reply, Callable[[], None]] | UpstreamError:
    """One call within the deadline, counted in flight on its deployment and holding a slot of its provider's
    concurrency limit until the reply is closed (the returned release). The breaker gets its verdict, or its ticket
    back when the attempt was cancelled or never got a slot (ccm's own queue says nothing about the upstream).
    Whatever the attempt raised crosses the upstream boundary here (`located`): provider named, secrets redacted."""
    request = walk.request
    call = Call(request.body, request.raw, request.headers, request.stream, target.model, request.input_tokens)
    provider, state = target.provider, target.state
    name = provider.provider.name
    limiter = provider.limiter
    borrower = object() if limiter is not None else None
    waiting = limiter is not None  # for a free slot
    state.in_flight += 1
    try:
        # anyio's scope, not asyncio's cheaper timeout: the adapters close responses under anyio shields, which a
        # native cancel would cut through (a connection left open on httpx's own transport). A bare scope with the
        # deadline, not `anyio.fail_after`, whose two generator context managers around it cost as much again
        # (~77k instructions against ~49k, every attempt)
        with anyio.CancelScope(deadline=deadline) as scope:
            if limiter is not None:
                await limiter.acquire_on_behalf_of(borrower)
                waiting = False
            reply = await provider.adapter.send(call)
        if scope.cancelled_caught:
            raise TimeoutError
    except TimeoutError:
        error = _deadline_error(provider, walk, deadline, waiting)
    except UpstreamError as failure:
        error = with_quirk_hint(located(failure, name, redactor), target.model.name, target.model.quirks)
    except BaseException:
        _give_back(state, None if waiting else limiter, borrower)
        state.breaker.release(ticket)
        raise
    else:
        state.breaker.record(ticket, None)
        return reply, functools.partial(_give_back, state, limiter, borrower)
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
    message = f"{who} is unavailable after repeated failures (circuit open, next try in {wait}s)"
    return classified(provider, 529, message, retry_after=str(wait))


def _deadline_error(provider: ProviderRuntime, walk: _Walk, deadline: float, waiting: bool) -> UpstreamError:
    name = provider.provider.name
    if deadline >= walk.deadline:
        walk.stop = True
        message = f"no answer within the request's {walk.total:g}s total timeout"
    else:
        message = f"provider {name!r} did not answer within its total timeout"
    if waiting:
        message += f" (every one of its {provider.provider.max_concurrency} concurrent slots was busy)"
    return timed_out(name, message)


def _describe_failures(model: Model, attempts: Sequence[Attempt]) -> str:
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


def choose(
    candidates: Sequence[Target], balance: Balance, rand: RandomSource, avoid: Sequence[Target] = ()
) -> Target | None:
    """The target for the next attempt among `candidates` not in `avoid`; None when no breaker lets one through."""
    usable = [t for t in candidates if t.state.breaker.available and t not in avoid]
    if not usable:
        return None
    pool = [t for t in usable if t.has_room] or usable
    if balance == "least-busy" and len(pool) > 1:
        least = min(t.state.in_flight / t.weight for t in pool)
        pool = [t for t in pool if t.state.in_flight / t.weight == least]
    return _weighted(pool, rand)


def _weighted(pool: Sequence[Target], rand: RandomSource) -> Target:
    if len(pool) == 1:
        return pool[0]
    point = rand() * sum(t.weight for t in pool)
    for target in pool:
        point -= target.weight
        if point < 0:
            return target
    return pool[-1]  # rand() is below 1, but float sums round
