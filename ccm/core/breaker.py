"""A circuit breaker per deployment (a provider and an upstream model): stop sending requests to one that keeps
failing.

    closed     requests flow; consecutive health failures are counted, any answer from the upstream resets them
    open       after `threshold` consecutive failures, or at once on a `retry-after` longer than the retry policy
               waits: every request skips this deployment (to another deployment of the same model, else to the
               model's fallbacks) until the cool-down ends
    half-open  the cool-down is over: exactly one request (the probe) is let through; its success closes the
               breaker, its failure opens it again with a doubled cool-down (up to `max_cooldown`)
    off        `breaker off` in the route file: never opens (failures are still counted, for /health)

The thresholds come from the route file (`breaker 5 failures cooldown 10s..2m`, `BreakerPolicy`): build one with
`Breaker.from_policy`.

Usage by the dispatcher, once per attempt:

    ticket = breaker.admit()          # None: open, skip this provider
    ...                               # the attempt
    breaker.record(ticket, error)     # error None on success; or breaker.release(ticket) when there is no verdict

Health failures are the ones that say the upstream is unwell (429, 5xx, 529, timeouts, connect errors, garbage
answers). A 4xx is an answer: the upstream is up and the request was wrong, so it counts as a success. An unset
variable (`config`) or a cancelled attempt says nothing about the upstream and is only a release.

Breakers live on their provider's runtime (`ccm.core.deployments`), which a table reload keeps when the provider is
unchanged, so the state survives reloads; a changed provider (new URL, new key, new breaker policy) starts closed.
Single-threaded (one event loop): no locks. The clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from ccm.errors import FailureReason, UpstreamError
from ccm.frozen import frozen
from ccm.table import BreakerPolicy

BreakerState = Literal["closed", "open", "half_open", "off"]

HEALTH_FAILURES: frozenset[FailureReason] = frozenset({"429", "5xx", "529", "timeout", "connect", "protocol"})

_DEFAULT = BreakerPolicy()
FAILURE_THRESHOLD = _DEFAULT.failures
COOLDOWN = _DEFAULT.cooldown  # seconds before the first probe after opening on consecutive failures
MAX_COOLDOWN = _DEFAULT.max_cooldown  # a dead upstream is probed at most this rarely
MAX_HOLD = 600.0  # a `retry-after` beyond this is not trusted further


@frozen
class Ticket:
    """Permission for one attempt; `probe` marks the single attempt let through while half-open."""

    probe: bool


_PASS = Ticket(probe=False)
_PROBE = Ticket(probe=True)


class Breaker:
    __slots__ = (
        "enabled",
        "threshold",
        "cooldown",
        "max_cooldown",
        "clock",
        "_state",
        "_failures",
        "_open_until",
        "_next_cooldown",
        "_probing",
        "_opened",
        "_last_failure",
    )

    def __init__(
        self,
        threshold: int = FAILURE_THRESHOLD,
        cooldown: float = COOLDOWN,
        max_cooldown: float = MAX_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._open_until = 0.0
        self._next_cooldown = cooldown
        self._probing = False
        self._opened = 0  # how many times it opened, for /health
        self._last_failure: str | None = None

    @classmethod
    def from_policy(cls, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> Breaker:
        return cls(policy.failures, policy.cooldown, policy.max_cooldown, clock, policy.enabled)

    @property
    def state(self) -> BreakerState:
        if not self.enabled:
            return "off"
        if self._state == "open" and self.clock() >= self._open_until:
            return "half_open"
        return self._state

    @property
    def available(self) -> bool:
        """Whether `admit` would let an attempt through now (without taking the probe slot)."""
        state = self.state
        return state == "closed" or state == "off" or (state == "half_open" and not self._probing)

    def admit(self) -> Ticket | None:
        state = self.state
        if state == "closed" or state == "off":
            return _PASS
        if state == "half_open" and not self._probing:
            self._state, self._probing = "half_open", True
            return _PROBE
        return None

    def record(self, ticket: Ticket, error: UpstreamError | None) -> None:
        """The verdict of an admitted attempt."""
        if error is None or error.reason == "4xx":
            self._success(ticket)
        elif error.reason in HEALTH_FAILURES:
            self._failure(ticket, error.reason)
        else:
            self.release(ticket)

    def hold(self, seconds: float, reason: str) -> None:
        """Open now for `seconds` (the upstream said so with a long `retry-after`), unless already held longer."""
        self._last_failure = reason
        if self.enabled:
            self._open(min(seconds, MAX_HOLD))

    def release(self, ticket: Ticket) -> None:
        """The attempt ended without a verdict (cancelled, or never reached the upstream): free the probe slot."""
        if ticket.probe:
            self._probing = False

    def snapshot(self) -> dict[str, Any]:
        """For `GET /health`: plain JSON values."""
        state = self.state
        view: dict[str, Any] = {"state": state, "consecutive_failures": self._failures, "opened": self._opened}
        if state == "open":
            view["retry_in"] = round(self._open_until - self.clock(), 3)
        if self._last_failure is not None:
            view["last_failure"] = self._last_failure
        return view

    def _success(self, ticket: Ticket) -> None:
        if self._state == "open" and not ticket.probe:
            # A late answer to an attempt admitted before the breaker opened says little about now.
            return
        self._state, self._failures, self._probing, self._next_cooldown = "closed", 0, False, self.cooldown

    def _failure(self, ticket: Ticket, reason: FailureReason) -> None:
        self._last_failure = reason
        if ticket.probe:
            self._open(self._next_cooldown)
            self._next_cooldown = min(self._next_cooldown * 2, self.max_cooldown)
            return
        if self._state != "closed":
            return
        self._failures += 1
        if self._failures >= self.threshold and self.enabled:
            self._open(self._next_cooldown)

    def _open(self, seconds: float) -> None:
        until = self.clock() + seconds
        if self._state == "open":
            self._open_until = max(self._open_until, until)  # never shorten a longer hold
            return
        self._state, self._open_until, self._probing = "open", until, False
        self._opened += 1
