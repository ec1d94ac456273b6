"""Small builders shared by the ledger's tests."""

from __future__ import annotations

from decimal import Decimal

from ccm.ledger.cost import cost
from ccm.ledger.money import NANOS_PER_USD, Money
from ccm.ledger.records import UsageRow
from ccm.table import Price
from ccm.usage import TokenUsage

SONNET = Price(input=Decimal(3), output=Decimal(15), cache_write_5m=Decimal("3.75"), cache_write_1h=Decimal(6),
               cache_read=Decimal("0.30"), web_search=Decimal(10))
# A price that makes a request of 1,000 output tokens cost exactly one cent: fixed-size costs for the exactness tests.
CENT_PER_1K_OUTPUT = Price(input=Decimal(0), output=Decimal(10))
CENT: Money = NANOS_PER_USD // 100


def usd(text: str) -> Money:
    return int(Decimal(text) * NANOS_PER_USD)


def row(request_id: str, *, usage: TokenUsage = TokenUsage(output=1000), price: Price | None = CENT_PER_1K_OUTPUT,
        markup: Decimal = Decimal(0), key_id: int | None = None, **fields: object) -> UsageRow:
    return UsageRow(request_id, usage, cost(usage, price, markup), price, markup, key_id=key_id,
                    **fields)  # type: ignore[arg-type]
