"""The values the request path and the ledger hand each other: who the caller is, what is held, what was used.

All frozen: a `KeyInfo` is a snapshot of a key when it was read, a `Hold` what admission granted, a `UsageRow` the
one finished request (built once, when the request is over, from the router's record of it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Literal

import orjson

from ccm.ledger.cost import Cost
from ccm.ledger.money import Money
from ccm.ledger.times import Micros, Period
from ccm.table import Price
from ccm.usage import TokenUsage

KeyStatus = Literal["active", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
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

    @property
    def checked(self) -> bool:
        """Whether admission has anything to check and count (a key with none of these can skip `admit`)."""
        return self.credits or self.budget is not None or self.rpm is not None or self.tpm is not None


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class RateState:
    """One limit after an admission, for `anthropic-ratelimit-*` headers: `reset_at` is when it is whole again."""

    kind: Literal["rpm", "tpm"]
    limit: int
    remaining: int
    reset_at: Micros


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    request_id: str
    key: KeyInfo
    amount: Money
    tokens: int  # the token estimate counted against tpm at admission (corrected at settle)
    created_at: Micros
    expires_at: Micros
    limits: tuple[RateState, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One finished request. `time` is when it finished (the store's clock when None); `key_id` None is the local
    caller. `cost` is what `ccm.ledger.cost.cost(usage, price, markup)` gave for the same `usage`, `price` and
    `markup`, which are stored beside it (the price snapshot), so a later price change never changes it."""

    request_id: str
    usage: TokenUsage = TokenUsage()
    cost: Cost = Cost(0, 0, priced=False)
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


@dataclass(frozen=True, slots=True)
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
