"""Money: an integer number of nano-dollars (1e-9 USD), in storage and in arithmetic. Never a float.

A request's cost is computed exactly (Decimal) and rounded once to the nano-dollar, so it is off by at most half a
nano-dollar: far below any price's precision ($0.02 per million tokens is 0.02 nano-dollars a token). A 64-bit
integer still holds nine billion dollars: every amount a command accepts is at most `MAX_AMOUNT` ($10,000,000), so
sums of many fit the INTEGER/BIGINT columns of both stores.

`parse_usd` reads what a person types ("12.5", "$0.25", "1,000"); `format_usd` writes "$12.345678".
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TypeAlias

from ccm.ledger.errors import BadAmount

Money: TypeAlias = int
"""Nano-dollars (1e-9 USD)."""

NANOS_PER_USD = 1_000_000_000
MAX_AMOUNT: Money = 10_000_000 * NANOS_PER_USD

_USD = re.compile(r"\$?(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)?(?:\.(?P<frac>[0-9]+))?")


def parse_usd(text: str, *, allow_zero: bool = True, allow_negative: bool = False) -> Money:
    """US dollars as typed on a command line, as nano-dollars.

    Accepts `12`, `12.5`, `$0.25`, `1,000.50`; a leading `-` only where `allow_negative`. Rejects everything float
    parsing would let through but a ledger must not: NaN, inf, exponents (`1e3`), more than nine decimals (a
    fraction of a nano-dollar), amounts above `MAX_AMOUNT`, empty or non-numeric text.
    """
    raw = text.strip()
    negative = raw.startswith("-")
    body = raw[1:].strip() if negative else raw
    found = _USD.fullmatch(body)
    if not raw or not found or (found["whole"] is None and found["frac"] is None):
        lowered = body.lower().lstrip("$")
        if lowered in ("nan", "inf", "infinity", "+inf", "-inf", "+nan", "-nan"):
            raise BadAmount(f"`{text}` is not an amount of money", "write a number of US dollars, e.g. 12.50")
        if re.fullmatch(r"[0-9.]+e[+-]?[0-9]+", lowered):
            raise BadAmount(f"`{text}`: exponents are not accepted for money", "write the digits out, e.g. 1000")
        raise BadAmount(f"`{text}` is not an amount of money", "write a number of US dollars, e.g. 12.50")
    if negative and not allow_negative:
        raise BadAmount(f"`{text}` is negative", "amounts here are positive US dollars, e.g. 12.50")
    whole = int((found["whole"] or "0").replace(",", ""))
    frac = found["frac"] or ""
    if len(frac) > 9:
        raise BadAmount(f"`{text}` has more than nine decimals", "the ledger counts in nano-dollars (0.000000001)")
    nanos = whole * NANOS_PER_USD + int(frac.ljust(9, "0"))
    if nanos > MAX_AMOUNT:
        raise BadAmount(f"`{text}` is too large", f"at most {format_usd(MAX_AMOUNT)} at a time")
    if nanos == 0 and not allow_zero:
        raise BadAmount(f"`{text}` is zero", "give an amount above zero, e.g. 12.50")
    return -nanos if negative else nanos


def format_usd(amount: Money) -> str:
    """`$12.345678`: two decimals at least, trailing zeros beyond them dropped, every nano-dollar shown."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), NANOS_PER_USD)
    digits = f"{frac:09d}".rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{digits}"


def to_decimal(amount: Money) -> Decimal:
    """US dollars, exactly."""
    return Decimal(amount).scaleb(-9)


def from_decimal(usd: Decimal) -> Money:
    """US dollars to nano-dollars, rounded once, half up (away from zero on a tie, as accountants round)."""
    try:
        return int(usd.scaleb(9).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except InvalidOperation as error:  # NaN, infinity
        raise BadAmount(f"`{usd}` is not an amount of money", None) from error


def cents(amount: Money) -> str:
    """The amount in US cents as a decimal string, as Anthropic's cost report writes it ("123.45" is $1.2345)."""
    text = f"{Decimal(amount).scaleb(-7):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
