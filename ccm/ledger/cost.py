"""The cost of a request: pure, exact, rounded once.

`cost(usage, price, markup)` multiplies each class's count by its own rate in Decimal arithmetic (no float anywhere),
adds the exact amounts, and only then rounds, half up, to the nano-dollar; the charged cost is rounded once from the
exact upstream amount times the markup, not from the rounded upstream cost. Each line of the breakdown is rounded on
its own for display and for the per-class report (so lines may differ from the total by under a nano-dollar each).

A cache class whose price is not given costs the `input` rate and its line says `fallback` (the compiler only allows
that where the upstream does not bill the class apart: see `ccm.table.Price`). No price at all is a cost of zero
with `priced` false: the request is still metered.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

from ccm.frozen import frozen
from ccm.ledger.money import Money, from_decimal
from ccm.table import Price
from ccm.usage import TokenUsage

MILLION = Decimal(1_000_000)
THOUSAND = Decimal(1_000)
HUNDRED = Decimal(100)
# Enough digits that no product or sum here is ever rounded before the one rounding at the end (a trillion tokens
# at a six-decimal price needs ~25).
EXACT = Context(prec=60)


@frozen
class CostLine:
    """One billed class: `quantity` tokens (searches for `web_search`) at `rate` USD per million (per 1,000)."""

    token_class: str
    quantity: int
    rate: Decimal
    upstream: Decimal  # exact US dollars
    charged: Money  # this line with the markup, rounded on its own
    fallback: bool = False  # no price for this class: the `input` rate applied


@frozen
class Cost:
    upstream: Money
    charged: Money
    lines: tuple[CostLine, ...] = ()
    priced: bool = True

    @property
    def markup(self) -> Money:
        return self.charged - self.upstream


UNPRICED = Cost(0, 0, priced=False)  # what a request with no price costs (most: a route file need not price)


def rates(price: Price) -> dict[str, tuple[Decimal, bool]]:
    """Each class's rate and whether it fell back to the input rate."""

    def rate(value: Decimal | None) -> tuple[Decimal, bool]:
        return (price.input, True) if value is None else (value, False)

    return {
        "input": (price.input, False),
        "output": (price.output, False),
        "cache_write_5m": rate(price.cache_write_5m),
        "cache_write_1h": rate(price.cache_write_1h),
        "cache_read": rate(price.cache_read),
        "web_search": (price.web_search or Decimal(0), False),
    }


def cost(usage: TokenUsage, price: Price | None, markup: Decimal = Decimal(0)) -> Cost:
    """The upstream and charged cost of `usage` at `price`, with `markup` percent added (20 for 20%)."""
    if price is None:
        return UNPRICED
    if not markup.is_finite() or markup < 0:
        raise ValueError(f"markup must be a finite percentage of at least 0, not {markup}")
    with localcontext(EXACT):
        factor = 1 + markup / HUNDRED
        lines = []
        total = Decimal(0)
        for token_class, (rate, fallback) in rates(price).items():
            quantity: int = getattr(usage, token_class)
            if not quantity:
                continue
            unit = THOUSAND if token_class == "web_search" else MILLION
            exact = quantity * rate / unit
            total += exact
            lines.append(CostLine(token_class, quantity, rate, exact, from_decimal(exact * factor), fallback))
        return Cost(from_decimal(total), from_decimal(total * factor), tuple(lines))


def markup_for(key_markup: Decimal | None, plan_markup: Decimal | None, file_markup: Decimal) -> Decimal:
    """Which markup applies: the key's own, else its plan's, else the route file's (`settings { markup 20% }`)."""
    if key_markup is not None:
        return key_markup
    if plan_markup is not None:
        return plan_markup
    return file_markup
