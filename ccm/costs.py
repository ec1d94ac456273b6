"""Money figures: what a request cost and what a key has left — the seam where the ledger plugs in.

    Costs                 the protocol: `request_cost(record)`, `await session_cost(session_id, caller)`,
                          `await balances()`
    PriceListCosts        a request's upstream cost: its usage × the price the route file declared for the model
                          that served (the price snapshot the record keeps, so a reload cannot change it), priced as
                          the ledger prices it (`ccm.ledger.cost`); sessions and balances are unknown here
                          (`ccm run --no-ledger`)
    price_cost(usage, p)  that cost, exact (`Decimal`)

Amounts are US dollars as `Decimal`, exact; they become floats only where a float is the format (Prometheus'
exposition, JSON for the statusline).

The metrics (`ccm.metrics`) and the session endpoint (`ccm.sessions`) take a `Costs`; with the ledger on, the
service passes the ledger's (`ccm.metering.LedgerCosts`: the charge it settled for a record, markup included, a
session's total from its store, shared by every worker, and the keys' balances), else `PriceListCosts()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from ccm.core.record import Caller, RequestRecord
from ccm.ledger.cost import cost
from ccm.ledger.money import to_decimal
from ccm.table import Price
from ccm.usage import TokenUsage


class Costs(Protocol):
    def request_cost(self, record: RequestRecord) -> Decimal | None:
        """What the request cost in USD; None when unknown (no usage, or no price for the model)."""
        ...

    async def session_cost(self, session_id: str, caller: Caller | None) -> Decimal | None:
        """What the Claude Code session has cost `caller` (None: everyone) so far in USD; None when unknown."""
        ...

    async def balances(self) -> Mapping[str, Decimal]:
        """Key label -> remaining balance in USD, for the keys that have one (empty without a ledger)."""
        ...


class PriceListCosts:
    """Costs from the route file's `price` declarations alone."""

    def request_cost(self, record: RequestRecord) -> Decimal | None:
        if record.usage is None or record.price is None:
            return None
        return price_cost(record.usage, record.price)

    async def session_cost(self, session_id: str, caller: Caller | None) -> Decimal | None:
        return None  # only a ledger knows a whole session: the recent records are a window, not the session

    async def balances(self) -> Mapping[str, Decimal]:
        return {}


def price_cost(usage: TokenUsage, price: Price) -> Decimal:
    """The upstream cost of `usage` at `price`, exact (the ledger's own pricing: `ccm.ledger.cost`)."""
    return to_decimal(cost(usage, price).upstream)
