"""Anthropic Admin API and OpenRouter /key shapes over the ledger, on both stores."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from ccm.ledger.apis import cost_report, json_bytes, messages_usage_report, openrouter_key
from ccm.ledger.errors import BadInput
from ccm.ledger.ledger import Ledger
from ccm.ledger.records import NewKey, limits_of
from ccm.ledger.times import DAY, HOUR, MINUTE, iso
from ccm.table import Policy
from ccm.usage import TokenUsage
from tests.ledger.conftest import FakeClock
from tests.ledger.helpers import SONNET, row, usd


async def _fill(ledger: Ledger, clock: FakeClock) -> tuple[int, int]:
    key, _ = await ledger.create_key(NewKey("alice", credits=usd("10"), budget=usd("5"), period="month"))
    day0 = clock() // DAY * DAY
    clock.at = day0 + HOUR
    for i in range(3):  # three days, one request each, plus a local one on day 0
        hold = await ledger.admit(key, f"a{i}", usd("0.1"), 2000)
        await ledger.settle(hold, row(f"a{i}", usage=TokenUsage(input=1000, output=100, cache_write_5m=10,
                                                           cache_write_1h=20, cache_read=30, web_search=1),
                                      price=SONNET, key_id=key.id, model="sonnet", provider="anthropic"))
        if i == 0:
            await ledger.record(row("local", usage=TokenUsage(input=500), price=SONNET, model="coder", provider="ds"))
        clock.advance(DAY)
    return key.id, day0


def q(**params: str | list[str]) -> dict[str, list[str]]:
    return {k.replace("__", "[]"): v if isinstance(v, list) else [v] for k, v in params.items()}


async def test_messages_usage_report_daily_grouped_and_paged(ledger: Ledger, clock: FakeClock) -> None:
    _, day0 = await _fill(ledger, clock)
    page1 = await messages_usage_report(ledger.store, q(starting_at=iso(day0 + 5 * HOUR), limit="2",
                                                        group_by__=["api_key_id", "model"]), clock)
    assert [b["starting_at"] for b in page1["data"]] == [iso(day0), iso(day0 + DAY)]  # snapped to the day
    assert page1["has_more"] is True and page1["next_page"]
    first = sorted(page1["data"][0]["results"], key=lambda r: (r["api_key_id"] is None, str(r["api_key_id"])))
    assert [(r["api_key_id"], r["model"]) for r in first] == [("alice", "sonnet"), (None, "coder")]
    alice = first[0]
    assert alice["uncached_input_tokens"] == 1000 and alice["output_tokens"] == 100
    assert alice["cache_creation"] == {"ephemeral_1h_input_tokens": 20, "ephemeral_5m_input_tokens": 10}
    assert alice["cache_read_input_tokens"] == 30 and alice["server_tool_use"] == {"web_search_requests": 1}
    assert alice["workspace_id"] is None
    page2 = await messages_usage_report(ledger.store, q(starting_at=iso(day0), limit="2", page=page1["next_page"],
                                                        group_by__=["api_key_id"]), clock)
    assert [b["starting_at"] for b in page2["data"]] == [iso(day0 + 2 * DAY), iso(day0 + 3 * DAY)]
    assert page2["data"][0]["results"][0]["uncached_input_tokens"] == 1000
    assert page2["data"][1]["results"] == []  # a bucket with nothing in it
    ungrouped = await messages_usage_report(ledger.store, q(starting_at=iso(day0), ending_at=iso(day0 + DAY)), clock)
    assert len(ungrouped["data"]) == 1 and ungrouped["data"][0]["results"][0]["uncached_input_tokens"] == 1500
    assert ungrouped["has_more"] is False and ungrouped["next_page"] is None


async def test_minute_and_hour_buckets_read_the_rows(ledger: Ledger, clock: FakeClock) -> None:
    _, day0 = await _fill(ledger, clock)
    hourly = await messages_usage_report(ledger.store, q(starting_at=iso(day0), bucket_width="1h", limit="3",
                                                         models__=["sonnet"]), clock)
    assert [sum(r["uncached_input_tokens"] for r in b["results"]) for b in hourly["data"]] == [0, 1000, 0]
    minutes = await messages_usage_report(ledger.store, q(starting_at=iso(day0 + HOUR), bucket_width="1m",
                                                          limit="2", api_key_ids__=["alice"]), clock)
    assert minutes["data"][0]["ending_at"] == iso(day0 + HOUR + MINUTE)
    assert minutes["data"][0]["results"][0]["uncached_input_tokens"] == 1000


@pytest.mark.parametrize("params, says", [
    ({}, "starting_at"),
    ({"starting_at": "2099-01-01"}, "future"),
    ({"starting_at": "yesterday"}, "not a date"),
    ({"starting_at": "2026-01-01", "bucket_width": "1w"}, "bucket_width"),
    ({"starting_at": "2026-01-01", "limit": "32"}, "limit"),
    ({"starting_at": "2026-01-01", "limit": "-1"}, "limit"),
    ({"starting_at": "2026-01-01", "group_by[]": "colour"}, "cannot group by"),
    ({"starting_at": "2026-01-01", "page": "not-a-cursor"}, "cursor"),
    ({"starting_at": "2026-01-02", "ending_at": "2026-01-01"}, "after"),
])
async def test_bad_report_parameters(module_database_url: str, params: dict[str, str], says: str) -> None:
    clock = FakeClock()
    ledger = await Ledger.open(module_database_url, clock=clock)
    try:
        with pytest.raises(BadInput) as refused:
            await messages_usage_report(ledger.store, q(**params), clock)
        assert says in refused.value.message + (refused.value.hint or "")
    finally:
        await ledger.store.close()


async def test_cost_report_in_cents_as_decimal_strings(ledger: Ledger, clock: FakeClock) -> None:
    _, day0 = await _fill(ledger, clock)
    totals = await cost_report(ledger.store, q(starting_at=iso(day0), limit="1"), clock)
    # day 0: alice 1000x3 + 100x15 + 10x3.75 + 20x6 + 30x0.3 = 4666.5 per million = $0.0046665, + one search $0.01;
    # local 500x3 = $0.0015. In cents: 0.46665 + 1 + 0.15
    assert totals["data"][0]["results"][0]["amount"] == "1.61665"
    assert totals["data"][0]["results"][0]["currency"] == "USD"
    lines = await cost_report(ledger.store, q(starting_at=iso(day0), limit="1", group_by__=["description"]), clock)
    by_type = {(r["model"], r["token_type"], r["cost_type"]): r["amount"] for r in lines["data"][0]["results"]}
    assert by_type[("sonnet", "cache_creation.ephemeral_1h_input_tokens", "tokens")] == "0.012"
    assert by_type[("sonnet", None, "web_search")] == "1"
    assert by_type[("coder", "uncached_input_tokens", "tokens")] == "0.15"
    assert sum(Decimal(v) for v in by_type.values()) == Decimal("1.61665")
    with pytest.raises(BadInput):
        await cost_report(ledger.store, q(starting_at=iso(day0), bucket_width="1h"), clock)


async def test_openrouter_key_fields(ledger: Ledger, clock: FakeClock) -> None:
    key_id, _ = await _fill(ledger, clock)
    key, account = await ledger.key("alice")
    data = (await openrouter_key(ledger.store, key, account, clock()))["data"]
    each = usd("0.0146665")
    assert data["label"] == "alice" and data["limit"] == Decimal(5) and data["limit_reset"] == "monthly"
    assert data["usage"] == Decimal(3 * each).scaleb(-9)
    assert data["limit_remaining"] == (Decimal(usd("5")) - account.period_spent).scaleb(-9)
    assert data["usage_daily"] == 0  # the clock is on the day after the last request
    assert data["usage_monthly"] <= data["usage"]
    body = orjson.loads(json_bytes({"data": data}))
    assert body["data"]["limit"] == 5 and isinstance(body["data"]["usage"], float)
    assert json_bytes({"x": Decimal("0.000000001")}) == b'{"x":0.000000001}'


async def test_openrouter_key_reports_a_plans_budget_and_rpm(ledger: Ledger, clock: FakeClock) -> None:
    """A key with no budget of its own shows its plan's as admission counts it: what it was charged in the period,
    and what is held now."""
    key, _ = await ledger.create_key(NewKey("member", plan="pro"))
    inherited = limits_of((Policy(kind="plan", name="pro", budget=Decimal(1), period="week", rpm=60),))
    hold = await ledger.admit(key, "w0", usd("0.1"), 10, inherited=inherited)
    await ledger.settle(hold, row("w0", usage=TokenUsage(output=25_000), key_id=key.id))  # $0.25
    await ledger.admit(key, "w1", usd("0.1"), 10, inherited=inherited)  # still open
    info, account = await ledger.key("member")
    data = (await openrouter_key(ledger.store, info.under(inherited), account, clock()))["data"]
    assert (data["limit"], data["limit_reset"], data["limit_remaining"]) == (Decimal(1), "weekly", Decimal("0.65"))
    assert data["usage_weekly"] == Decimal("0.25") and data["rate_limit"] == {"requests": 60, "interval": "1m"}
    plain = (await openrouter_key(ledger.store, info, account, clock()))["data"]  # outside the plan: no limit
    assert (plain["limit"], plain["limit_remaining"], plain["rate_limit"]) == (None, None, None)
