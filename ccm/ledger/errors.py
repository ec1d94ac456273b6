"""Everything the ledger raises, in one tree (the request path maps each to one answer; the CLI to one message).

    LedgerError
    ├── BadInput               a person's input the ledger will not take; nothing was written (message + hint)
    │   ├── BadAmount          (ccm.ledger.money) money that is NaN, negative, huge, not a number…
    │   ├── BadTime            a date or time that cannot be read, or is in the future where the past is meant
    │   ├── UnknownKey         no key of that name
    │   └── BadDatabaseURL     a --db / CCM_DB that names no database ccm can use
    ├── Refusal                a request the key may not make now (the request path answers 401/402/429)
    │   ├── KeyRefused         revoked or expired (401)
    │   ├── OutOfCredit        the balance cannot cover the hold (402)
    │   ├── OverBudget         the period's budget cannot cover it (402)
    │   └── RateLimited        rpm or tpm exhausted (429 with retry-after)
    ├── DuplicateRequest       a request id admitted twice
    ├── SchemaMismatch         the database is behind or ahead of this ccm: run `ccm db upgrade`
    └── LedgerUnavailable      the database cannot be reached or written: the fail-open/closed policy decides

Store drivers translate their own exceptions (sqlite3, asyncpg, OSError) into these in one place each.
"""

from __future__ import annotations

from typing import Literal

Money = int  # nano-dollars (ccm.ledger.money, which imports this module for BadAmount)

__all__ = [
    "BadAmount", "BadDatabaseURL", "BadInput", "BadTime", "DuplicateRequest", "KeyRefused", "LedgerError",
    "LedgerUnavailable", "OutOfCredit", "OverBudget", "RateLimited", "Refusal", "SchemaMismatch", "UnknownKey",
]


class LedgerError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class BadInput(LedgerError):
    pass


class BadAmount(BadInput):
    pass


class BadTime(BadInput):
    pass


class UnknownKey(BadInput):
    def __init__(self, name: str) -> None:
        super().__init__(f"no key named `{name}`", "`ccm keys list` shows the keys")
        self.name = name


class BadDatabaseURL(BadInput):
    pass


class DuplicateRequest(LedgerError):
    pass


class SchemaMismatch(LedgerError):
    pass


class LedgerUnavailable(LedgerError):
    """The database cannot be reached or written. `url` has its password hidden."""

    def __init__(self, message: str, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.url = url


class Refusal(LedgerError):
    """A request refused at admission: nothing was held or counted."""


class KeyRefused(Refusal):
    def __init__(self, name: str, reason: Literal["revoked", "expired"]) -> None:
        super().__init__(f"key `{name}` is {reason}", "ask for a new key")
        self.name = name
        self.reason = reason


def format_usd(amount: Money) -> str:
    from ccm.ledger.money import format_usd

    return format_usd(amount)


class OutOfCredit(Refusal):
    def __init__(self, name: str, balance: Money, needed: Money) -> None:
        super().__init__(
            f"key `{name}` is out of credit: its balance is {format_usd(balance)}, and this request needs up to "
            f"{format_usd(needed)} held",
            f"add credit: ccm credits add {name} 10",
        )
        self.name = name
        self.balance = balance
        self.needed = needed


class OverBudget(Refusal):
    def __init__(self, name: str, period: str, spent: Money, limit: Money, resets_at: int, needed: Money) -> None:
        super().__init__(
            f"key `{name}` is over its {period}ly budget: {format_usd(spent)} of {format_usd(limit)} spent or held, "
            f"and this request needs up to {format_usd(needed)}",
            "the budget resets at the start of the next period (UTC)",
        )
        self.name = name
        self.period = period
        self.spent = spent
        self.limit = limit
        self.resets_at = resets_at  # microseconds since the epoch, UTC
        self.needed = needed


class RateLimited(Refusal):
    def __init__(self, name: str, kind: Literal["rpm", "tpm"], limit: int, remaining: int, retry_after: float,
                 reset_at: int) -> None:
        unit = "requests" if kind == "rpm" else "tokens"
        super().__init__(f"key `{name}` is over its limit of {limit} {unit} per minute",
                         f"retry in {retry_after:.1f}s")
        self.name = name
        self.kind = kind
        self.limit = limit
        self.remaining = remaining
        self.retry_after = retry_after  # seconds until this request would be admitted
        self.reset_at = reset_at  # microseconds since the epoch when the limit is whole again
