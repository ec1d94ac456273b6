"""Retry policy evaluation: whether a failed attempt is tried again on the same provider, and after how long.

    retry_class(error)    the policy word a failure answers to (`429`, `5xx`, `529`, `timeout`, `connect`), or None
                          for failures no policy retries: other 4xx (the request itself is wrong), `protocol` (the
                          upstream answered garbage; the next model is a better bet) and `config` (an unset variable)
    retry_after(error)    the upstream's own hint in seconds (`retry-after-ms`, `retry-after` as seconds or an
                          HTTP date), or None
    backoff_delay         exponential backoff with full jitter inside the policy's `backoff_min..backoff_max`
    next_retry            the one question the dispatcher asks after a failure: sleep this long and try the same
                          provider again, or stop and move on to the next model (`RetryVerdict.delay is None`)

A hint is honoured exactly, up to a cap: the policy's `backoff_max`. A longer hint means the provider is out for
longer than this policy is willing to wait, so the verdict is to move on now (and the breaker opens for the hinted
time, see `ccm.core.breaker`). Nothing ever sleeps past the request's deadline: a retry whose delay would not leave
time for the attempt itself is not made.

Pure: the random source and the wall clock (only for HTTP-date hints) are arguments, so tests are deterministic.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from ccm.errors import UpstreamError
from ccm.frozen import frozen
from ccm.table import RetryOn, RetryPolicy

RandomSource = Callable[[], float]  # uniform in [0, 1), like random.random

# 4xx answers that say "not now" rather than "not this request" (the Anthropic SDK retries them too).
_TRANSIENT_4XX: dict[int, RetryOn] = {408: "timeout", 409: "5xx"}
# A retry is only worth making when some time is left for the attempt after the sleep.
MIN_ATTEMPT_TIME = 0.05


def retry_class(error: UpstreamError) -> RetryOn | None:
    if error.reason in ("429", "5xx", "529", "timeout", "connect"):
        return error.reason
    if error.reason == "truncated":  # an answer that ended early: the server's failure, like a 5xx
        return "5xx"
    if error.reason == "4xx":
        return _TRANSIENT_4XX.get(error.status)
    return None


def retry_after(error: UpstreamError, wall_clock: Callable[[], float] = time.time) -> float | None:
    """The upstream's hint in seconds, never negative; None when absent or unreadable."""
    return parse_retry_after(error.retry_after, wall_clock)


def parse_retry_after(value: str | None, wall_clock: Callable[[], float] = time.time) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - wall_clock()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def backoff_delay(policy: RetryPolicy, retries_done: int, rand: RandomSource = random.random) -> float:
    """Full jitter: uniform between `backoff_min` and an exponentially growing ceiling capped at `backoff_max`.

    The floor keeps a retry from hammering an upstream that just failed; the jitter spreads the retries of many
    concurrent requests that failed together (the thundering herd after a 529)."""
    floor = min(policy.backoff_min, policy.backoff_max)
    ceiling = min(policy.backoff_max, policy.backoff_min * 2.0 ** (retries_done + 1))
    return floor + (ceiling - floor) * rand()


@frozen
class RetryVerdict:
    delay: float | None  # seconds to sleep before retrying the same provider; None: move on
    why: str  # for the attempt log: `retry in 0.73s`, `not retryable`, `retries exhausted`, …


def next_retry(
    policy: RetryPolicy,
    retries_done: int,
    error: UpstreamError,
    remaining: float,
    rand: RandomSource = random.random,
    wall_clock: Callable[[], float] = time.time,
) -> RetryVerdict:
    """`retries_done` counts retries already made on this provider for this request; `remaining` is the time left
    before the request's deadline."""
    kind = retry_class(error)
    if kind is None or kind not in policy.on:
        return RetryVerdict(None, f"{error.reason} is not retried")
    if retries_done >= policy.attempts:
        return RetryVerdict(None, f"retries exhausted ({policy.attempts})")
    hint = retry_after(error, wall_clock)
    if hint is not None and hint > policy.backoff_max:
        return RetryVerdict(None, f"retry-after {hint:g}s exceeds the {policy.backoff_max:g}s cap")
    delay = hint if hint is not None else backoff_delay(policy, retries_done, rand)
    if delay + MIN_ATTEMPT_TIME > remaining:
        return RetryVerdict(None, f"deadline: {remaining:.2f}s left")
    return RetryVerdict(delay, f"retry in {delay:.2f}s")


def long_retry_after(
    policy: RetryPolicy, error: UpstreamError, wall_clock: Callable[[], float] = time.time
) -> float | None:
    """The hint when it is longer than the policy will wait: the breaker keeps the provider out for that long."""
    hint = retry_after(error, wall_clock)
    return hint if hint is not None and hint > policy.backoff_max else None
