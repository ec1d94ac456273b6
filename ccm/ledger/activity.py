"""What one key did, for the pages: its usage over the last 24 hours (hourly) and the last 30 days (daily), by model
and token class, and its latest requests. Read-only, and about one key only: its id is the one filter a caller can
set (the dashboard passes the id of its session's key, never anything from the request).

    key_activity(store, key, at) -> (KeyInfo, Account, Activity) | None    `key`: its id, or its name

The key's row and its activity are read in one read transaction (one snapshot, one round trip on PostgreSQL).
Each part is one indexed range, whatever the size of the ledger: the 30 days come from the daily rollups by the
(key_id, day) index (a row per day, model and provider), the 24 hours from the key's usage rows by the (key_id, ts)
index, and the latest requests from that index read backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ccm.frozen import frozen
from ccm.ledger.money import Money
from ccm.ledger.records import Account, KeyInfo
from ccm.ledger.store import ops
from ccm.ledger.store.base import Op, Q, Store
from ccm.ledger.times import DAY, HOUR, Micros

HOURS = 24
DAYS = 30
RECENT = 30
TOKEN_CLASSES = ("input", "output", "cache write", "cache read")

_SUMS = ("requests", "errors", "input", "output", "cache_write_5m + cache_write_1h", "cache_read", "charged")
_ROW_SUMS = ("COUNT(*)", "SUM(CASE WHEN error IS NOT NULL OR status >= 400 THEN 1 ELSE 0 END)", "SUM(input)",
             "SUM(output)", "SUM(cache_write_5m + cache_write_1h)", "SUM(cache_read)", "SUM(charged)")


@frozen
class Bucket:
    """One model's usage in one time bucket."""

    start: Micros
    model: str
    requests: int
    errors: int
    tokens: tuple[int, int, int, int]  # by `TOKEN_CLASSES`
    charged: Money


@frozen
class Series:
    """Buckets of `width` starting at each of `starts` (oldest first, every bucket of the window, empty or not)."""

    width: Micros
    starts: tuple[Micros, ...]
    buckets: tuple[Bucket, ...]

    @property
    def models(self) -> tuple[str, ...]:
        """The models in the window, the most charged first (then the most used)."""
        totals: dict[str, tuple[Money, int]] = {}
        for b in self.buckets:
            charged, requests = totals.get(b.model, (0, 0))
            totals[b.model] = (charged + b.charged, requests + b.requests)
        return tuple(sorted(totals, key=lambda m: (-totals[m][0], -totals[m][1], m)))


@frozen
class Request:
    """One of the key's latest requests."""

    at: Micros
    request_id: str
    model: str
    rule: str
    provider: str
    upstream_model: str
    tokens: tuple[int, int, int, int]  # by `TOKEN_CLASSES`
    charged: Money
    latency_ms: int
    status: int
    error: str | None


@frozen
class Activity:
    hourly: Series
    daily: Series
    recent: tuple[Request, ...]


def _buckets(rows: Sequence[tuple[Any, ...]]) -> tuple[Bucket, ...]:
    out = []
    for start, model, requests, errors, inp, out_, write, read, charged in rows:
        out.append(Bucket(int(start), str(model or ""), int(requests or 0), int(errors or 0),
                          (int(inp or 0), int(out_ or 0), int(write or 0), int(read or 0)), int(charged or 0)))
    return tuple(out)


def _activity(key_id: int, at: Micros) -> Op[Activity]:
    hour = at // HOUR * HOUR
    hours = tuple(hour - i * HOUR for i in reversed(range(HOURS)))
    rows = yield Q(f"SELECT ts / {HOUR} * {HOUR}, COALESCE(model, ''), {', '.join(_ROW_SUMS)} FROM usage "
                   f"WHERE key_id = ? AND ts >= ? AND ts < ? GROUP BY ts / {HOUR}, COALESCE(model, '')",
                   (key_id, hours[0], hour + HOUR))
    hourly = Series(HOUR, hours, _buckets(rows))
    today = at // DAY
    days = tuple((today - i) * DAY for i in reversed(range(DAYS)))
    rows = yield Q(f"SELECT day * {DAY}, model, {', '.join(f'SUM({s})' for s in _SUMS)} FROM rollup_daily "
                   "WHERE key_id = ? AND day >= ? AND day <= ? GROUP BY day, model", (key_id, today - DAYS + 1, today))
    daily = Series(DAY, days, _buckets(rows))
    rows = yield Q("SELECT ts, request_id, COALESCE(model, ''), COALESCE(rule, ''), COALESCE(provider, ''), "
                   "COALESCE(upstream_model, ''), input, output, cache_write_5m + cache_write_1h, cache_read, charged, "
                   "latency_ms, status, error FROM usage WHERE key_id = ? ORDER BY ts DESC, id DESC LIMIT ?",
                   (key_id, RECENT))
    recent = tuple(Request(ts, request_id, model, rule, provider, upstream, (inp, out, write, read), charged, latency,
                           status, error)
                   for (ts, request_id, model, rule, provider, upstream, inp, out, write, read, charged, latency,
                        status, error) in rows)
    return Activity(hourly, daily, recent)


async def key_activity(store: Store, key: int | str, at: Micros) -> tuple[KeyInfo, Account, Activity] | None:
    """The key (by id, or by name), its account, and its last 24 hours, last 30 days (today included, to `at`) and
    latest requests, in one snapshot; None when there is no such key."""

    def work() -> Op[tuple[KeyInfo, Account, Activity] | None]:
        found = yield from (ops.get_key_by_id(key) if isinstance(key, int) else ops.find_key(key))
        if found is None:
            return None
        activity = yield from _activity(found[0].id, at)
        return found[0], found[1], activity

    result: tuple[KeyInfo, Account, Activity] | None = await store.run(work(), write=False)
    return result
