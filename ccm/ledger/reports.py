"""Reports: read-only queries over a store, fast at millions of rows.

Grouped by key, model, provider or day (or not at all), a report reads the daily rollups for the whole days in its
range and the usage rows only for the partial days at its edges, so `ccm usage --by day` over a million rows reads a
few thousand rollup rows. Grouped by rule, session or hour it reads the rows (by the time index).

Exports stream: rows come from the store in chunks (`Store.stream`) and leave as CSV or JSON text chunk by chunk, in
constant memory, with times and amounts formatted by the database itself (the export's hot loop is C code; on
SQLite the database also joins each chunk's CSV lines into one string).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

from ccm.frozen import frozen
from ccm.ledger.errors import BadInput, UnknownKey
from ccm.ledger.money import Money
from ccm.ledger.store.base import Op, Q, Store
from ccm.ledger.times import DAY, HOUR, Micros, period_start, to_datetime

By = Literal["key", "model", "provider", "rule", "session", "day", "hour"]
BY: tuple[str, ...] = get_args(By)
_ROLLUP_BY = {"key": "key_id", "model": "model", "provider": "provider", "day": "day"}
_ROW_BY = {"key": "COALESCE(key_id, 0)", "model": "COALESCE(model, '')", "provider": "COALESCE(provider, '')",
           "rule": "COALESCE(rule, '')", "session": "COALESCE(session, '')", "day": f"ts / {DAY}",
           "hour": f"ts / {HOUR}"}
COUNTS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search")
_SUMS = ("requests", "errors", *COUNTS, "upstream", "charged")
_ROW_SUMS = ("COUNT(*)", "SUM(CASE WHEN error IS NOT NULL OR status >= 400 THEN 1 ELSE 0 END)",
             *(f"SUM({c})" for c in COUNTS), "SUM(upstream)", "SUM(charged)")
LOCAL = "(local)"


def check_by(by: str | None) -> By | None:
    if by is None:
        return None
    if by not in BY:
        raise BadInput(f"cannot group by `{by}`", f"group by one of: {', '.join(BY)}")
    return by  # type: ignore[return-value]


@dataclass(slots=True)
class Line:
    """One line of a report: the group's value (a key name, model, day as YYYY-MM-DD…) and its sums."""

    group: str
    requests: int = 0
    errors: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    upstream: Money = 0
    charged: Money = 0

    def add(self, sums: Sequence[Any]) -> None:
        values = [int(v or 0) for v in sums]
        self.requests += values[0]
        self.errors += values[1]
        for name, value in zip(COUNTS, values[2:8], strict=True):
            self.tokens[name] += value
        self.upstream += values[8]
        self.charged += values[9]


def _window(since: Micros, until: Micros) -> tuple[int, int]:
    """The whole days inside [since, until): [first, last) as day numbers."""
    return -(-since // DAY), until // DAY


def _report(by: By | None, since: Micros, until: Micros, key_id: int | None) -> Op[list[tuple[Any, ...]]]:
    out: list[tuple[Any, ...]] = []
    key_filter = "" if key_id is None else " AND COALESCE(key_id, 0) = ?"
    key_params: list[Any] = [] if key_id is None else [key_id]
    if by is None or by in _ROLLUP_BY:
        first, last = _window(since, until)
        if first < last:
            group = _ROLLUP_BY[by] if by else "0"
            grouping = f" GROUP BY {group}" if by else ""
            rows = yield Q(f"SELECT {group}, {', '.join(f'SUM({s})' for s in _SUMS)} FROM rollup_daily "
                           f"WHERE day >= ? AND day < ?{key_filter}{grouping}", [first, last, *key_params])
            out += rows
            edges = [(since, first * DAY), (last * DAY, until)]
        else:
            edges = [(since, until)]
    else:
        edges = [(since, until)]
    group = _ROW_BY[by] if by else "0"
    grouping = f" GROUP BY {group}" if by else ""
    for low, high in edges:
        if low >= high:
            continue
        rows = yield Q(f"SELECT {group}, {', '.join(_ROW_SUMS)} FROM usage WHERE ts >= ? AND ts < ?{key_filter}"
                       f"{grouping}", [low, high, *key_params])
        out += rows
    return out


def _key_names() -> Op[dict[int, str]]:
    rows = yield Q("SELECT id, name FROM keys")
    return {r[0]: r[1] for r in rows}


def _key_id(name: str) -> Op[int]:
    if name == LOCAL:
        return 0
    rows = yield Q("SELECT id FROM keys WHERE name = ?", (name,))
    if not rows:
        raise UnknownKey(name)
    key_id: int = rows[0][0]
    return key_id


def _label(by: By | None, value: Any, names: dict[int, str]) -> str:
    if by is None:
        return "total"
    if by == "key":
        return names.get(int(value), LOCAL) if int(value) else LOCAL
    if by == "day":
        return to_datetime(int(value) * DAY).strftime("%Y-%m-%d")
    if by == "hour":
        return to_datetime(int(value) * HOUR).strftime("%Y-%m-%dT%H:00Z")
    return str(value) or "-"


async def usage(store: Store, *, since: Micros, until: Micros, by: By | None = None,
                key: str | None = None) -> list[Line]:
    """`ccm usage`: requests, tokens and cost in [since, until), grouped `by` (None: one total line), for one key
    (its name, or `(local)` for the local caller) or all. Lines are in the group's order."""

    def work() -> Op[tuple[list[tuple[Any, ...]], dict[int, str]]]:
        key_id = None if key is None else (yield from _key_id(key))
        rows = yield from _report(by, since, until, key_id)
        names = yield from _key_names()
        return rows, names

    rows, names = await store.run(work(), write=False)
    lines: dict[Any, Line] = {}
    for row in rows:
        group = row[0] if by else 0
        line = lines.get(group)
        if line is None:
            line = lines[group] = Line(_label(by, group, names))
        line.add(row[1:])
    ordered = sorted(lines.items(), key=lambda item: (isinstance(item[0], str), item[0]))
    if by in ("key", "model", "provider", "rule", "session"):
        ordered.sort(key=lambda item: item[1].group)
    return [line for _, line in ordered] or ([Line("total")] if by is None else [])


@frozen
class Bill:
    key: str
    period: str  # YYYY-MM (or the day/week's first day)
    requests: int
    upstream: Money
    charged: Money

    @property
    def markup(self) -> Money:
        return self.charged - self.upstream


async def billing(store: Store, *, since: Micros, until: Micros, period: Literal["day", "week", "month"] = "month",
                  key: str | None = None) -> list[Bill]:
    """Per key per calendar period (UTC): requests, upstream cost, markup and charged cost."""

    def work() -> Op[tuple[list[tuple[Any, ...]], dict[int, str]]]:
        key_id = None if key is None else (yield from _key_id(key))
        key_filter = "" if key_id is None else " AND key_id = ?"
        rows = yield Q("SELECT day, key_id, SUM(requests), SUM(upstream), SUM(charged) FROM rollup_daily "
                       f"WHERE day >= ? AND day < ?{key_filter} GROUP BY day, key_id",
                       [since // DAY, -(-until // DAY), *([] if key_id is None else [key_id])])
        names = yield from _key_names()
        return rows, names

    rows, names = await store.run(work(), write=False)
    bills: dict[tuple[str, Micros], list[int]] = {}
    for day, key_id, requests, upstream, charged in rows:
        name = names.get(key_id, LOCAL) if key_id else LOCAL
        start = period_start(period, int(day) * DAY)
        sums = bills.setdefault((name, start), [0, 0, 0])
        sums[0] += int(requests)
        sums[1] += int(upstream)
        sums[2] += int(charged)
    fmt = "%Y-%m" if period == "month" else "%Y-%m-%d"
    return [Bill(name, to_datetime(start).strftime(fmt), *sums) for (name, start), sums in sorted(bills.items())]


# --- exports ---------------------------------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "time", "request_id", "key", "session", "rule", "model", "provider", "upstream_model", "attempts", "stream",
    "status", "error", "input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
    "cache_read_tokens", "web_search_requests", "latency_ms", "ttft_ms", "upstream_usd", "charged_usd", "price_id",
    "estimated", "truncated",
)


def _usd_sql(column: str, dialect: str) -> str:
    # Amounts are never negative; formatted by the database as dollars with all nine decimals.
    if dialect == "postgres":
        return f"(u.{column} / 1000000000)::text || '.' || lpad((u.{column} % 1000000000)::text, 9, '0')"
    return f"printf('%d.%09d', u.{column} / 1000000000, u.{column} % 1000000000)"


def _time_sql(dialect: str) -> str:
    if dialect == "postgres":
        return "to_char(to_timestamp(u.ts / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    return "strftime('%Y-%m-%dT%H:%M:%S', u.ts / 1000000, 'unixepoch') || printf('.%06dZ', u.ts % 1000000)"


_TEXT_COLUMNS = frozenset({"u.request_id", "u.session", "u.rule", "u.model", "u.provider", "u.upstream_model",
                           "u.error", f"COALESCE(k.name, '{LOCAL}')"})


def _columns(dialect: str) -> list[str]:
    return [
        _time_sql(dialect), "u.request_id", f"COALESCE(k.name, '{LOCAL}')", "u.session", "u.rule", "u.model",
        "u.provider", "u.upstream_model", "u.attempts", "u.stream", "u.status", "u.error", "u.input", "u.output",
        "u.cache_write_5m", "u.cache_write_1h", "u.cache_read", "u.web_search", "u.latency_ms", "u.ttft_ms",
        _usd_sql("upstream", dialect), _usd_sql("charged", dialect), "u.price_id", "u.estimated", "u.truncated",
    ]


def _csv_field(column: str, dialect: str) -> str:
    """One CSV field, made by the database: text always quoted (RFC 4180, quotes doubled), numbers bare, NULL
    empty."""
    if column in _TEXT_COLUMNS:
        return f"'\"' || replace(COALESCE({column}, ''), '\"', '\"\"') || '\"'"
    if column.startswith(("strftime", "to_char", "printf", "(u.")):
        return column  # a time or an amount: never NULL, never needs quotes
    as_text = f"{column}::text" if dialect == "postgres" else f"CAST({column} AS TEXT)"
    return f"COALESCE({as_text}, '')"


# SQLite writes a whole CSV line with one printf, its time included (`%w` doubles the quotes inside a quoted field),
# and the date of each row comes from a small table of days (one row per day of the range) instead of strftime:
# together about twice as fast as concatenating formatted fields (and a second printf for the time costs 7% more).
_SQLITE_DAYS = (
    Q("CREATE TEMP TABLE IF NOT EXISTS export_days (day INTEGER PRIMARY KEY, text TEXT NOT NULL)"),
    Q("INSERT OR IGNORE INTO export_days WITH RECURSIVE d(day) AS (SELECT ? UNION ALL SELECT day + 1 FROM d "
      "WHERE day < ?) SELECT day, date(day * 86400, 'unixepoch') FROM d"),
)
_SQLITE_LINE = (
    "printf('%sT%02d:%02d:%02d.%06dZ,\"%w\",\"%w\",\"%w\",\"%w\",\"%w\",\"%w\",\"%w\",%d,%d,%d,\"%w\",%d,%d,%d,%d,%d,"
    "%d,%d,%s,%d.%09d,%d.%09d,%s,%d,%d', "
    "d.text, u.ts / 3600000000 % 24, u.ts / 60000000 % 60, u.ts / 1000000 % 60, u.ts % 1000000, "
    f"u.request_id, COALESCE(k.name, '{LOCAL}'), COALESCE(u.session, ''), COALESCE(u.rule, ''), "
    "COALESCE(u.model, ''), COALESCE(u.provider, ''), COALESCE(u.upstream_model, ''), u.attempts, u.stream, u.status, "
    "COALESCE(u.error, ''), u.input, u.output, u.cache_write_5m, u.cache_write_1h, u.cache_read, u.web_search, "
    "u.latency_ms, u.ttft_ms, u.upstream / 1000000000, u.upstream % 1000000000, u.charged / 1000000000, "
    "u.charged % 1000000000, u.price_id, u.estimated, u.truncated)"
)
# SQLite also joins the lines, a block of about `chunk` rows at a time: one Python string per block instead of a
# tuple and a string per row, and the export's thread runs SQLite without the GIL for a whole block instead of taking
# it back at every row (about 1.3x the rows/s of fetching lines: docs/keys-and-credits.md). A block is a time window
# [lo, hi) cut from the time index: every row is in exactly one, and rows sharing a timestamp are never split. Its
# lines keep their order because SQLite keeps a FROM subquery's ORDER BY under an aggregate other than count, min or
# max.
_SQLITE_WINDOWS = (
    Q("CREATE TEMP TABLE IF NOT EXISTS export_windows (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL)"),
    Q("DELETE FROM export_windows"),
    # a window ends at the timestamp of the chunk-th exported row after its start (?1 since, ?2 until, ?3 chunk, and
    # `{key}` the key filter's ?4); `>`, not `>=`, makes every window end later than it starts
    Q("INSERT INTO export_windows WITH RECURSIVE w(lo, hi) AS (SELECT ?1, ?1 UNION ALL SELECT hi, "
      "COALESCE((SELECT ts FROM usage WHERE ts > w.hi AND ts < ?2{key} ORDER BY ts LIMIT 1 OFFSET ?3 - 1), ?2) "
      "FROM w WHERE hi < ?2) SELECT lo, hi FROM w WHERE lo < hi"),
)


def export_query(dialect: str, *, since: Micros, until: Micros, key_id: int | None,
                 csv_chunk: int | None = None) -> tuple[str, list[Any], list[Q]]:
    """The export's query (and the statements to run before it on its connection): one row per usage row, its
    columns (`EXPORT_COLUMNS`); or with `csv_chunk`, CSV built by the database (that is what makes a million-row
    export fast): one line per row on PostgreSQL, one block of about `csv_chunk` lines (NULL: none) per row on
    SQLite."""
    columns = _columns(dialect)
    joins = "LEFT JOIN keys k ON k.id = u.key_id"
    where, params = "u.ts >= ? AND u.ts < ?", [since, until]
    key_filter = "" if key_id is None else " AND COALESCE(u.key_id, 0) = ?"
    key_params = [] if key_id is None else [key_id]
    if csv_chunk is not None and dialect == "sqlite":
        days = Q(_SQLITE_DAYS[1].sql, (since // DAY, max(until - 1, since) // DAY))
        # cut by the exported rows only: a key's export is a block per `csv_chunk` of its own rows
        windows = Q(_SQLITE_WINDOWS[2].sql.format(key=" AND COALESCE(key_id, 0) = ?4" if key_id is not None else ""),
                    (since, until, csv_chunk, *key_params))
        block = (f"SELECT group_concat(line, char(10)) FROM (SELECT {_SQLITE_LINE} AS line FROM usage u {joins} "
                 f"JOIN export_days d ON d.day = u.ts / {DAY} WHERE u.ts >= w.lo AND u.ts < w.hi{key_filter} "
                 "ORDER BY u.ts, u.id)")
        sql = f"SELECT ({block}) FROM export_windows w ORDER BY w.lo"
        return sql, key_params, [_SQLITE_DAYS[0], days, *_SQLITE_WINDOWS[:2], windows]
    if csv_chunk is not None:
        select = " || ',' || ".join(_csv_field(c, dialect) for c in columns)
    else:
        select = ", ".join(columns)
    sql = f"SELECT {select} FROM usage u {joins} WHERE {where}{key_filter} ORDER BY u.ts, u.id"
    return sql, params + key_params, []


async def _export_rows(store: Store, since: Micros, until: Micros, key: str | None, chunk: int,
                       csv: bool = False) -> AsyncIterator[list[tuple[Any, ...]]]:
    key_id = None if key is None else await store.run(_key_id(key), write=False)
    sql, params, prepare = export_query(store.dialect, since=since, until=until, key_id=key_id,
                                        csv_chunk=chunk if csv else None)
    # SQLite's rows are blocks of `chunk` lines already: one at a time
    fetch = 1 if csv and store.dialect == "sqlite" else chunk
    async for rows in store.stream(sql, params, fetch, prepare=prepare):
        yield rows


async def export_csv(store: Store, *, since: Micros, until: Micros, key: str | None = None,
                     chunk: int = 20_000) -> AsyncIterator[str]:
    """Every usage row in [since, until) as CSV text: the header, then about `chunk` lines at a time."""
    yield ",".join(EXPORT_COLUMNS) + "\n"
    async for rows in _export_rows(store, since, until, key, chunk, csv=True):
        lines = [r[0] for r in rows if r[0] is not None]
        if lines:
            yield "\n".join(lines) + "\n"


async def export_json(store: Store, *, since: Micros, until: Micros, key: str | None = None,
                      chunk: int = 10_000, lines: bool = False) -> AsyncIterator[bytes]:
    """The same rows as JSON: one array (`lines` False) or one object per line (JSON Lines)."""
    first = True
    if not lines:
        yield b"["
    async for rows in _export_rows(store, since, until, key, chunk):
        objects = [dict(zip(EXPORT_COLUMNS, row, strict=True)) for row in rows]
        if lines:
            yield b"".join(orjson.dumps(o) + b"\n" for o in objects)
        else:
            body = b",\n".join(orjson.dumps(o) for o in objects)
            yield (b"\n" if first else b",\n") + body
            first = False
    if not lines:
        yield b"\n]\n"
