"""Golden cost tests: every upstream's usage shape, mapped and priced exactly (golden/usage_shapes.json)."""

from __future__ import annotations

import json
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ccm.ledger.cost import cost, markup_for
from ccm.table import Price
from ccm.usage import (
    TokenUsage,
    from_anthropic,
    from_gemini,
    from_openai_chat,
    from_openai_responses,
    merge_anthropic,
)
from tests.ledger.helpers import SONNET

CASES = json.loads((Path(__file__).parent / "golden" / "usage_shapes.json").read_text())["cases"]


def read(reader: str, raw: dict[str, Any]) -> TokenUsage:
    if reader == "anthropic_stream":
        return from_anthropic(merge_anthropic(raw["start"], *raw["deltas"]))
    readers = {"anthropic": from_anthropic, "openai_chat": from_openai_chat,
               "openai_responses": from_openai_responses, "gemini": from_gemini}
    return readers[reader](raw)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_usage_shape_maps_and_prices_exactly(case: dict[str, Any]) -> None:
    usage = read(case["reader"], case["raw"])
    assert asdict(usage) == case["usage"]
    priced = cost(usage, SONNET)
    assert priced.upstream == case["cost"] == priced.charged
    assert sum(line.upstream for line in priced.lines) == Decimal(case["cost"]).scaleb(-9)


def test_one_hour_writes_are_never_priced_as_five_minute_ones() -> None:
    usage = TokenUsage(input=2, output=20, cache_write_1h=12145, cache_read=7276)
    real = cost(usage, SONNET).upstream
    as_if_5m = cost(TokenUsage(input=2, output=20, cache_write_5m=12145, cache_read=7276), SONNET).upstream
    assert real == 75_358_800 and as_if_5m == 48_032_550
    assert (real - as_if_5m) / real > Decimal("0.36")


def test_markup_is_applied_to_the_exact_cost_and_rounded_once() -> None:
    usage = TokenUsage(input=1)
    price = Price(input=Decimal("0.0005"), output=Decimal(1))  # one token: half a nano-dollar
    assert cost(usage, price).upstream == 1  # half up
    three = TokenUsage(input=3)  # 1.5 nano-dollars exactly
    assert cost(three, price).upstream == 2
    assert cost(three, price, Decimal(100)).charged == 3  # 3.0, not 2 x 2 = 4 from the rounded cost
    big = cost(TokenUsage(input=2, output=20, cache_write_1h=12145, cache_read=7276), SONNET, Decimal(20))
    assert (big.upstream, big.charged, big.markup) == (75_358_800, 90_430_560, 15_071_760)


def test_a_cache_class_without_a_price_costs_the_input_rate_and_says_so() -> None:
    deepseek = Price(input=Decimal("0.27"), output=Decimal("1.10"), cache_read=Decimal("0.07"))
    priced = cost(TokenUsage(input=1000, cache_write_5m=1000, cache_read=1000), deepseek)
    lines = {line.token_class: line for line in priced.lines}
    assert lines["cache_write_5m"].rate == Decimal("0.27") and lines["cache_write_5m"].fallback
    assert not lines["cache_read"].fallback and not lines["input"].fallback
    assert priced.upstream == (270 + 270 + 70) * 1000  # 1,000 tokens at 0.27 per million: $0.00027


def test_no_price_is_zero_and_unpriced() -> None:
    priced = cost(TokenUsage(input=10**6, output=10**6), None)
    assert (priced.upstream, priced.charged, priced.priced) == (0, 0, False)


def test_negative_or_non_finite_markup_is_refused() -> None:
    for markup in (Decimal(-1), Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(ValueError):
            cost(TokenUsage(input=1), SONNET, markup)


def test_markup_precedence() -> None:
    assert markup_for(Decimal(5), Decimal(10), Decimal(20)) == 5
    assert markup_for(None, Decimal(10), Decimal(20)) == 10
    assert markup_for(None, None, Decimal(20)) == 20


def test_huge_counts_stay_exact() -> None:
    priced = cost(TokenUsage(input=10**12, output=10**12), SONNET)
    assert priced.upstream == (3 + 15) * 10**6 * 10**9


def test_usage_sums_and_token_totals() -> None:
    a, b = TokenUsage(input=1, output=2, cache_read=3), TokenUsage(cache_write_1h=4, web_search=1)
    total = a + b
    assert (total.prompt_tokens, total.tokens, total.web_search) == (8, 10, 1)
