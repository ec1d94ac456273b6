"""What the pages read of one key (`ccm.ledger.activity`), and the key operations the admin's keys pages add (by id,
limits): the same suite on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from ccm.ledger.activity import key_activity
from ccm.ledger.errors import BadInput, UnknownKey
from ccm.ledger.ledger import Ledger
from ccm.ledger.records import NewKey
from ccm.ledger.store.base import Op, Q, Store, sqlite_path
from ccm.ledger.store.postgres import PostgresStore
from ccm.ledger.store.sqlite import SQLiteStore
from ccm.ledger.times import DAY, HOUR
from ccm.usage import TokenUsage
from tests.ledger.conftest import FakeClock
from tests.ledger.helpers import CENT, row, usd


async def test_one_keys_hours_days_and_latest_requests_and_nobody_elses(ledger: Ledger, clock: FakeClock) -> None:
    mine, _ = await ledger.create_key(NewKey("mine"))
    other, _ = await ledger.create_key(NewKey("other"))
    at = clock()
    usage = TokenUsage(input=5, output=1000, cache_write_5m=7, cache_write_1h=3, cache_read=11)
    await ledger.record(row("now-1", key_id=mine.id, model="main", rule="default", usage=usage, time=at - 60))
    await ledger.record(row("now-2", key_id=mine.id, model="side", status=529, error="overloaded_error",
                            time=at - 30))
    await ledger.record(row("hours-ago", key_id=mine.id, model="main", time=at - 5 * HOUR))
    await ledger.record(row("days-ago", key_id=mine.id, model="main", time=at - 10 * DAY))
    await ledger.record(row("too-old", key_id=mine.id, model="main", time=at - 40 * DAY))
    await ledger.record(row("not-mine", key_id=other.id, model="main", time=at - 10))
    await ledger.record(row("local", model="main", time=at - 10))
    found = await key_activity(ledger.store, mine.id, at)
    assert found is not None and found[0].name == "mine"
    assert await key_activity(ledger.store, "mine", at) == found  # by name: the same
    assert await key_activity(ledger.store, "nobody", at) is None and await key_activity(ledger.store, 999, at) is None
    activity = found[2]

    hourly = activity.hourly
    assert len(hourly.starts) == 24 and hourly.starts[-1] == at // HOUR * HOUR and hourly.width == HOUR
    assert sum(b.requests for b in hourly.buckets) == 3  # now-1, now-2, hours-ago
    latest = [b for b in hourly.buckets if b.start == hourly.starts[-1] and b.model == "main"]
    assert latest[0].tokens == (5, 1000, 10, 11) and latest[0].charged == CENT
    assert [b.errors for b in hourly.buckets if b.model == "side"] == [1]
    assert hourly.models == ("main", "side")  # the most charged first

    daily = activity.daily
    assert len(daily.starts) == 30 and daily.starts[-1] == at // DAY * DAY
    assert sum(b.requests for b in daily.buckets) == 4  # not the one 40 days ago, nor another key's

    assert [r.request_id for r in activity.recent] == ["now-2", "now-1", "hours-ago", "days-ago", "too-old"]
    assert activity.recent[1].rule == "default" and activity.recent[0].error == "overloaded_error"
    theirs = await key_activity(ledger.store, other.id, at)
    assert theirs is not None and [r.request_id for r in theirs[2].recent] == ["not-mine"]


async def test_a_keys_limits_replaced(ledger: Ledger) -> None:
    await ledger.create_key(NewKey("limited", credits=usd("3"), rpm=10))
    changed = await ledger.set_limits("limited", budget=usd("2"), period="week", rpm=None, tpm=5000)
    assert (changed.budget, changed.period, changed.rpm, changed.tpm) == (usd("2"), "week", None, 5000)
    with pytest.raises(BadInput, match="go together"):
        await ledger.set_limits("limited", budget=usd("2"), period=None, rpm=None, tpm=None)
    with pytest.raises(BadInput, match="at least 1"):
        await ledger.set_limits("limited", budget=None, period=None, rpm=0, tpm=None)
    with pytest.raises(UnknownKey):
        await ledger.set_limits("nobody", budget=None, period=None, rpm=None, tpm=None)
    await ledger.revoke("limited")
    with pytest.raises(BadInput, match="revoked"):
        await ledger.set_limits("limited", budget=None, period=None, rpm=1, tpm=None)
    assert (await ledger.key("limited"))[0].tpm == 5000  # nothing written by the refusals


async def test_a_database_from_before_the_indexes_by_key_is_upgraded_to_them(database_url: str) -> None:
    path = sqlite_path(database_url)
    store: Store = await SQLiteStore.open(path) if path is not None else await PostgresStore.open(database_url)
    try:
        assert await store.migrate(to=2) == [1, 2]
        assert await store.migrate() == [3]

        def plan() -> Op[list[tuple[object, ...]]]:
            rows = yield Q("EXPLAIN QUERY PLAN SELECT ts, model, SUM(charged) FROM usage WHERE key_id = 1 AND ts > 0 "
                           "GROUP BY ts, model" if path is not None else
                           "SELECT indexdef FROM pg_indexes WHERE indexname = 'usage_key_ts'")
            return list(rows)

        found = " ".join(str(r) for r in await store.run(plan(), write=False))
        assert "COVERING INDEX usage_key_ts" in found or "INCLUDE (model" in found, found
    finally:
        await store.close()
