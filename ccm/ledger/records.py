"""The values the request path and the ledger hand each other: who the caller is, what is held, what was used.

All frozen: a `KeyInfo` is a snapshot of a key when it was read, a `Hold` what admission granted, a `UsageRow` the
one finished request (built once, when the request is over, from the router's record of it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from functools import lru_cache
from typing import Literal

import orjson

from ccm.frozen import frozen
from ccm.ledger.cost import UNPRICED, Cost
from ccm.ledger.money import Money, from_decimal
from ccm.ledger.times import Micros, Period
from ccm.table import Policy, Price
from ccm.usage import TokenUsage

KeyStatus = Literal["active", "revoked", "expired"]


@frozen
class Limits:
    """The budget and rate limits a key's plan or team gives it (`plan pro { budget $20 per month  rpm 60 }`), each
    with where it comes from (`from_`: limit -> "plan pro"). Each key of the plan has them on its own: a plan's budget
    is every key's budget, never a pool they share."""

    budget: Money | None = None
    period: Period | None = None
    rpm: int | None = None
    tpm: int | None = None
    from_: tuple[tuple[str, str], ...] = ()

    def source(self, limit: str) -> str | None:
        return dict(self.from_).get(limit)


NO_LIMITS = Limits()  # a key of no plan or team, or of one that sets no budget or limit


def limits_of(policies: Sequence[Policy]) -> Limits:
    """The limits of a key's plan and team (`Table.policies_of`: the plan's first), the first that sets each one
    winning, as it does for `models` and `markup`."""
    found: dict[str, Policy] = {}
    for policy in policies:
        for limit in ("budget", "rpm", "tpm"):
            if getattr(policy, limit) is not None:
                found.setdefault(limit, policy)
    if not found:  # the usual key: no plan or team, or one that sets none of these
        return NO_LIMITS
    budget, rpm, tpm = (found.get(limit) for limit in ("budget", "rpm", "tpm"))
    return Limits(
        budget=from_decimal(budget.budget) if budget is not None and budget.budget is not None else None,
        period=budget.period if budget is not None else None,
        rpm=rpm.rpm if rpm is not None else None,
        tpm=tpm.tpm if tpm is not None else None,
        from_=tuple((limit, f"{policy.kind} {policy.name}") for limit, policy in found.items()),
    )


@frozen
class KeyInfo:
    """A key as stored (never its secret). `credits` False: no balance is checked (the key is still metered and its
    budget and limits still apply). `budget` is per `period`, UTC calendar periods."""

    id: int
    name: str
    prefix: str
    created_at: Micros
    credits: bool = False
    budget: Money | None = None
    period: Period | None = None
    models: tuple[str, ...] = ()  # empty: every model
    rpm: int | None = None
    tpm: int | None = None
    markup: Decimal | None = None  # percent; None: the plan's or the file's
    plan: str | None = None
    team: str | None = None
    expires_at: Micros | None = None
    revoked_at: Micros | None = None
    secret_expires_at: Micros | None = None  # the presented secret's own end (an old secret in a rotation grace)
    inherited: Limits = NO_LIMITS  # what `under` took from the plan or team: only what the key does not set itself

    def status(self, at: Micros) -> KeyStatus:
        if self.revoked_at is not None and self.revoked_at <= at:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        if self.secret_expires_at is not None and self.secret_expires_at <= at:
            return "expired"
        return "active"

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def under(self, limits: Limits) -> KeyInfo:
        """The key with its plan's or team's limits where it sets none itself (a budget goes with its period): what
        admission checks and reports show. `inherited` keeps what was taken, and from where."""
        if not limits.from_:  # nothing to take (a key of no plan or team, or of one that sets none)
            return self
        own_budget = self.budget is not None
        taken = {"budget": None if own_budget else limits.budget, "rpm": None if self.rpm is not None else limits.rpm,
                 "tpm": None if self.tpm is not None else limits.tpm}
        inherited = Limits(budget=taken["budget"], period=None if own_budget else limits.period, rpm=taken["rpm"],
                           tpm=taken["tpm"], from_=tuple(item for item in limits.from_ if taken[item[0]] is not None))
        return replace(self, budget=self.budget if own_budget else limits.budget,
                       period=self.period if own_budget else limits.period,
                       rpm=self.rpm if self.rpm is not None else limits.rpm,
                       tpm=self.tpm if self.tpm is not None else limits.tpm, inherited=inherited)

    @property
    def own_budget(self) -> bool:
        """A budget of the key's own, counted by its account (`Account.period_spent`)."""
        return self.budget is not None and self.period is not None and not self.budget_inherited

    @property
    def budget_inherited(self) -> bool:
        """A budget from the plan or team: its spend in the period is read from the rollups, since the key's own
        counter (`Account.period_spent`) only counts for a budget of its own."""
        return self.inherited.budget is not None

    @property
    def checked(self) -> bool:
        """Whether admission has anything to check and count (a key with none of these can skip `admit`)."""
        return self.credits or self.budget is not None or self.rpm is not None or self.tpm is not None


@frozen
class Account:
    """A key's money and counters, as one row: what admission reads and writes under the row's lock.

    `balance` is what may still be held: credited - settled - held. `period_spent` is what was settled in the budget
    period starting at `period_start`. The rate buckets hold thousandths of a request / token, refilled
    continuously (`*_at` is when the level was last brought up to date)."""

    balance: Money = 0
    held: Money = 0
    credited: Money = 0
    settled: Money = 0
    period_start: Micros | None = None
    period_spent: Money = 0
    rpm_level: int = 0
    rpm_at: Micros = 0
    tpm_level: int = 0
    tpm_at: Micros = 0


@frozen
class RateState:
    """One limit after an admission, for `anthropic-ratelimit-*` headers: `reset_at` is when it is whole again."""

    kind: Literal["rpm", "tpm"]
    limit: int
    remaining: int
    reset_at: Micros


@frozen
class Hold:
    id: int
    request_id: str
    key: KeyInfo
    amount: Money
    tokens: int  # the token estimate counted against tpm at admission (corrected at settle)
    created_at: Micros
    expires_at: Micros
    limits: tuple[RateState, ...] = ()


@frozen
class UsageRow:
    """One finished request. `time` is when it finished (the store's clock when None); `key_id` None is the local
    caller. `cost` is what `ccm.ledger.cost.cost(usage, price, markup)` gave for the same `usage`, `price` and
    `markup`, which are stored beside it (the price snapshot), so a later price change never changes it."""

    request_id: str
    usage: TokenUsage = TokenUsage()
    cost: Cost = UNPRICED
    price: Price | None = None
    markup: Decimal = Decimal(0)
    key_id: int | None = None
    session: str | None = None
    rule: str | None = None
    model: str | None = None  # the alias
    provider: str | None = None
    upstream_model: str | None = None
    attempts: int = 1
    stream: bool = False
    status: int = 200
    error: str | None = None  # an error type (`overloaded_error`, `caller_cancelled`…); None: success
    latency_ms: int = 0
    ttft_ms: int | None = None
    estimated: bool = False  # tokens counted locally: the upstream reported none
    truncated: bool = False  # the answer was cut short (client gone, hold exhausted) and billed as far as it went
    time: Micros | None = None

    def price_snapshot(self) -> tuple[str, str] | None:
        """(hash, canonical JSON) of the price and markup that made `cost`; None when the request was not priced."""
        return None if self.price is None else _snapshot(self.price, self.markup)


@lru_cache(maxsize=256)  # a table's prices are few and frozen: each is serialised and hashed once
def _snapshot(price: Price, markup: Decimal) -> tuple[str, str]:
    body = orjson.dumps({"price": price.model_dump(mode="json"), "markup": str(markup)},
                        option=orjson.OPT_SORT_KEYS).decode()
    return hashlib.sha256(body.encode()).hexdigest()[:32], body


@frozen
class NewKey:
    """What `ccm keys create` asks for, already checked."""

    name: str
    credits: Money | None = None  # None: no balance is checked
    budget: Money | None = None
    period: Period | None = None
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    expires_at: Micros | None = None
    markup: Decimal | None = None
    plan: str | None = None
    team: str | None = None
    note: str | None = None
