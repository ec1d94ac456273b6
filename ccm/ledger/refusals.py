"""What a request may be refused at admission for: nothing was held or counted (the request path answers 401, 402
or 429; see `ccm.metering`)."""

from __future__ import annotations

from typing import Literal

from ccm.ledger.errors import LedgerError
from ccm.ledger.money import Money, format_usd
from ccm.ledger.times import iso


class Refusal(LedgerError):
    """A request refused at admission: nothing was held or counted."""


class KeyRefused(Refusal):
    def __init__(self, name: str, reason: Literal["revoked", "expired"]) -> None:
        super().__init__(f"key `{name}` is {reason}", "ask for a new key")
        self.name = name
        self.reason = reason


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


ADJECTIVES = {"day": "daily", "week": "weekly", "month": "monthly"}


class OverBudget(Refusal):
    def __init__(self, name: str, period: str, spent: Money, limit: Money, resets_at: int, needed: Money,
                 source: str | None = None) -> None:
        whose = f" (its {source}'s)" if source else ""  # "plan trial": the budget every key of the plan has
        super().__init__(
            f"key `{name}` is over its {ADJECTIVES.get(period, period)} budget{whose}: {format_usd(spent)} of "
            f"{format_usd(limit)} spent or held, and this request needs up to {format_usd(needed)}",
            f"the budget resets at the start of the next period, {iso(resets_at)}",
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
