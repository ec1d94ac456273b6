"""Money figures: what a request cost and what a key has left — the seam where the ledger plugs in.

    Costs                 the protocol: `request_cost(record)`, `session_cost(session_id, caller)`, `balances()`
    PriceListCosts        what works without a ledger: a request's cost is its usage × the price the route file
                          declared for the model that served (the price snapshot the record keeps, so a reload
                          cannot change it); sessions and balances are unknown (None, nothing)
    price_cost(usage, p)  that product, exact (`Decimal`)

Amounts are US dollars as `Decimal`, exact: prices are converted from the table's decimal literals through their
shortest repr (`0.27` is `Decimal("0.27")`, not the binary double), so sums over millions of requests do not drift.
They become floats only where a float is the format (Prometheus' exposition, JSON for the statusline).

The metrics (`ccm.metrics`) and the session endpoint (`ccm.sessions`) take a `Costs`; the service passes
`PriceListCosts()` until the ledger (`ccm/ledger/`) provides its own implementation — the charge it settled for a
record, a session's total from its store (shared by every worker), the keys' balances — and is passed instead, in
`ccm.service.build_service`. Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from ccm.core.record import Caller, RequestRecord, TokenUsage
from ccm.table import Price

MILLION = Decimal(1_000_000)


class Costs(Protocol):
    def request_cost(self, record: RequestRecord) -> Decimal | None:
        """What the request cost in USD; None when unknown (no usage, or no price for the model)."""
        ...

    def session_cost(self, session_id: str, caller: Caller) -> Decimal | None:
        """What the Claude Code session has cost `caller` so far in USD; None when unknown."""
        ...

    def balances(self) -> Mapping[str, Decimal]:
        """Key label -> remaining balance in USD, for the keys that have one (empty without a ledger)."""
        ...


class PriceListCosts:
    """Costs from the route file's `price` declarations alone."""

    def request_cost(self, record: RequestRecord) -> Decimal | None:
        if record.usage is None or record.price is None:
            return None
        return price_cost(record.usage, record.price)

    def session_cost(self, session_id: str, caller: Caller) -> Decimal | None:
        return None  # only a ledger knows a whole session: the recent records are a window, not the session

    def balances(self) -> Mapping[str, Decimal]:
        return {}


_Rates = tuple[Decimal, Decimal, Decimal, Decimal]
# id(price) -> (price, its rates): a table's prices are the same objects for every request (a record keeps the
# model's), so they are converted once; the price is kept so its id cannot be reused. Bounded: cleared when full.
_RATES: dict[int, tuple[Price, _Rates]] = {}
MAX_RATES = 1024


def _rates(price: Price) -> _Rates:
    cached = _RATES.get(id(price))
    if cached is not None and cached[0] is price:
        return cached[1]
    if len(_RATES) >= MAX_RATES:
        _RATES.clear()
    rates = _convert(price)
    _RATES[id(price)] = (price, rates)
    return rates


def _convert(price: Price) -> _Rates:
    """Per-token rates in USD for input, output, cache read, cache write. A cache rate the file does not declare is
    the input rate (what the table's `price` means when only `input` and `output` are written)."""
    input_rate = Decimal(repr(price.input)) / MILLION
    read = Decimal(repr(price.cache_read)) / MILLION if price.cache_read is not None else input_rate
    write = Decimal(repr(price.cache_write)) / MILLION if price.cache_write is not None else input_rate
    return input_rate, Decimal(repr(price.output)) / MILLION, read, write


def price_cost(usage: TokenUsage, price: Price) -> Decimal:
    input_rate, output_rate, read_rate, write_rate = _rates(price)
    cost = usage.input_tokens * input_rate + usage.output_tokens * output_rate
    if usage.cache_read_input_tokens:
        cost += usage.cache_read_input_tokens * read_rate
    if usage.cache_creation_input_tokens:
        cost += usage.cache_creation_input_tokens * write_rate
    return cost
