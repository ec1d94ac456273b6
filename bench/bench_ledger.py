"""The ledger's speed: settled requests per second, `ccm usage --by day` over a million rows, a million-row export.

    .venv/bin/python -m bench.bench_ledger [--rows 1000000] [--requests 5000] [--postgres URL] [--sqlalchemy]

`measure()` is what bench/run.py calls; it returns the figures and their targets:

- settle: keyed requests (admit + settle: a hold, a usage row, a rollup, two commits) per second on a SQLite file,
  64 at a time through the writer's group commit (target >= 1,000/s on the 2-core machine), and local requests
  (one settle, no hold);
- report: `usage(by="day")` over `--rows` usage rows spread over 90 days and 20 keys (target < 1 s);
- export: the same rows as CSV through `export_csv` into a sink that only counts (target >= 200,000 rows/s).

`--postgres URL` measures the settle rate on a PostgreSQL database too (created and dropped under that server);
`--sqlalchemy` times one settle (hold + row + rollup, one commit) written with SQLAlchemy Core 2 (aiosqlite,
asyncpg) against the same statements through ccm's drivers: the measurement behind choosing the drivers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from ccm.ledger.cost import cost
from ccm.ledger.ledger import Ledger
from ccm.ledger.records import NewKey, UsageRow
from ccm.ledger.reports import export_csv, usage
from ccm.ledger.store.connect import open_store
from ccm.ledger.times import DAY, now
from ccm.table import Price
from ccm.usage import TokenUsage

PRICE = Price(input=Decimal(3), output=Decimal(15), cache_write_5m=Decimal("3.75"), cache_write_1h=Decimal(6),
              cache_read=Decimal("0.30"), web_search=Decimal(10))
TARGETS = {"settle_per_s": 1000.0, "usage_by_day_s": 1.0, "export_rows_per_s": 200_000.0}


async def settle_rate(url: str, requests: int, concurrency: int = 64, keyed: bool = True) -> float:
    """Requests per second, each admitted and settled (keyed) or only recorded (local)."""
    ledger = await Ledger.open(url)
    await ledger.start(background=False)
    try:
        key, _ = await ledger.create_key(NewKey(f"bench-{uuid.uuid4().hex[:8]}", credits=10**15))
        usage_ = TokenUsage(input=2, output=300, cache_write_1h=1200, cache_read=40_000)
        priced = cost(usage_, PRICE)
        numbers = iter(range(requests))
        prefix = uuid.uuid4().hex[:8]

        async def worker() -> None:
            for i in numbers:
                request_id = f"{prefix}-{i}"
                if keyed:
                    hold = await ledger.admit(key, request_id, 10**8, 50_000)
                    await ledger.settle(hold, UsageRow(request_id, usage_, priced, PRICE, key_id=key.id,
                                                       model="sonnet", provider="anthropic", status=200))
                else:
                    await ledger.record(UsageRow(request_id, usage_, priced, PRICE, model="sonnet",
                                                 provider="anthropic"))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        problems = await ledger.audit()
        assert not problems, problems
        return requests / elapsed
    finally:
        await ledger.stop()


def seed(path: Path, rows: int, days: int = 90, keys: int = 20) -> None:
    """`rows` usage rows and their rollups written straight into a SQLite ledger (what a year of traffic leaves)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    for k in range(1, keys + 1):
        conn.execute("INSERT INTO keys (id, name, prefix, created_at) VALUES (?, ?, ?, ?)",
                     (k, f"key-{k}", "ccm-sk-xxxxxx", 0))
    chance = random.Random(1)
    end = now() // DAY * DAY
    start = end - days * DAY
    models = [("sonnet", "anthropic"), ("opus", "anthropic"), ("coder", "deepseek"), ("flash", "gemini"),
              ("gpt", "openai")]
    rollups: dict[tuple[int, int, str, str], list[int]] = {}
    batch = []
    step = days * DAY // rows
    for i in range(rows):
        ts = start + i * step + chance.randrange(step)
        key = chance.randint(0, keys)
        model, provider = models[i % len(models)]
        tokens = (chance.randint(1, 50), chance.randint(10, 2000), 0, chance.randint(0, 5000),
                  chance.randint(0, 80_000), 0)
        upstream = charged = chance.randint(10**5, 10**8)
        batch.append((f"req-{i}", ts, key or None, f"session-{i // 50}", "default", model, provider, model, 1, 1,
                      200, None, *tokens, 1000, 300, upstream, charged, None, None, 0, 0))
        sums = rollups.setdefault((ts // DAY, key, model, provider), [0] * 16)
        for j, value in enumerate((1, 0, *tokens, upstream, charged, 0, 0, 0, 0, 0, 0)):
            sums[j] += value
        if len(batch) == 50_000:
            _insert(conn, batch)
            batch.clear()
    _insert(conn, batch)
    conn.executemany("INSERT INTO rollup_daily VALUES (" + ", ".join("?" * 20) + ")",
                     [(*k, *v) for k, v in rollups.items()])
    conn.execute("COMMIT")
    conn.close()


def _insert(conn: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO usage (request_id, ts, key_id, session, rule, model, provider, upstream_model, attempts, stream, "
        "status, error, input, output, cache_write_5m, cache_write_1h, cache_read, web_search, latency_ms, ttft_ms, "
        "upstream, charged, held, price_id, estimated, truncated) VALUES (" + ", ".join("?" * 26) + ")", batch)


async def report_and_export(url: str) -> tuple[float, float, int]:
    store = await open_store(url)
    try:
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            lines = await usage(store, since=0, until=now() + 1, by="day")
            timings.append(time.perf_counter() - start)
        assert len(lines) >= 90
        count = 0
        start = time.perf_counter()
        async for text in export_csv(store, since=0, until=now() + 1):
            count += text.count("\n")
        export_s = time.perf_counter() - start
        return min(timings), (count - 1) / export_s, count - 1
    finally:
        await store.close()


async def _postgres_database(server: str, action: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"{action} DATABASE {name}" + (" WITH (FORCE)" if action == "DROP" else ""))
    finally:
        await conn.close()


async def measure(rows: int = 1_000_000, requests: int = 5000, postgres: str | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="ccm-bench-ledger-") as folder:
        url = f"sqlite:///{folder}/settle.db"
        results["settle_per_s"] = await settle_rate(url, requests)
        results["local_settle_per_s"] = await settle_rate(url, requests, keyed=False)
        path = Path(folder) / "report.db"
        store = await open_store(f"sqlite:///{path}")
        await store.close()
        start = time.perf_counter()
        seed(path, rows)
        results["seed_s"] = time.perf_counter() - start
        results["rows"] = rows
        results["usage_by_day_s"], results["export_rows_per_s"], exported = await report_and_export(
            f"sqlite:///{path}")
        assert exported == rows, (exported, rows)
    if postgres:
        name = f"ccm_bench_{uuid.uuid4().hex[:8]}"
        await _postgres_database(postgres, "CREATE", name)
        try:
            url = postgres.rsplit("/", 1)[0] + "/" + name
            results["postgres_settle_per_s"] = await settle_rate(url, requests)
            results["postgres_local_settle_per_s"] = await settle_rate(url, requests, keyed=False)
        finally:
            await _postgres_database(postgres, "DROP", name)
    results["met"] = {
        "settle_per_s": results["settle_per_s"] >= TARGETS["settle_per_s"],
        "usage_by_day_s": results["usage_by_day_s"] < TARGETS["usage_by_day_s"],
        "export_rows_per_s": results["export_rows_per_s"] >= TARGETS["export_rows_per_s"],
    }
    return results


# --- the driver comparison (--sqlalchemy) ----------------------------------------------------------------------------


async def one_settle_ccm(url: str, rounds: int) -> float:
    """Median µs of one sequential settle through ccm's driver (the hold, the row, the rollup, the account)."""
    ledger = await Ledger.open(url)
    await ledger.start(background=False)
    try:
        key, _ = await ledger.create_key(NewKey(f"cmp-{uuid.uuid4().hex[:6]}", credits=10**15))
        usage_ = TokenUsage(input=2, output=300)
        priced = cost(usage_, PRICE)
        holds = [await ledger.admit(key, f"c{i}", 10**8, 100) for i in range(rounds)]
        timings = []
        for i, hold in enumerate(holds):
            start = time.perf_counter()
            await ledger.settle(hold, UsageRow(f"c{i}", usage_, priced, PRICE, key_id=key.id, model="m",
                                               provider="p"))
            timings.append(time.perf_counter() - start)
        return statistics.median(timings) * 1e6
    finally:
        await ledger.stop()


async def one_settle_sqlalchemy(url: str, rounds: int) -> float:
    """The same settle's statements with SQLAlchemy Core 2's async engine (aiosqlite or asyncpg)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from ccm.ledger.store import ops

    store = await open_store(url)  # the schema
    await store.close()
    engine_url = url.replace("sqlite:///", "sqlite+aiosqlite:///").replace("postgresql://", "postgresql+asyncpg://")
    engine = create_async_engine(engine_url)

    def named(sql: str) -> str:
        out = []
        for count, part in enumerate(sql.split("?")):
            out.append(part)
            out.append(f":p{count}")
        return "".join(out[:-1])

    lock = " FOR UPDATE" if url.startswith("postgresql") else ""
    select_key = text(f"SELECT {ops.KEY_COLUMNS} FROM keys WHERE id = :p0{lock}")
    delete_hold = text("DELETE FROM holds WHERE request_id = :p0 RETURNING amount, tokens, key_id")
    insert_usage = text(named(ops._INSERT_USAGE))
    write_account = text(named(ops._WRITE_ACCOUNT))
    upsert = text(named(ops._UPSERT_ROLLUP))
    async with engine.begin() as conn:
        key_id = (await conn.execute(text(
            "INSERT INTO keys (name, prefix, created_at, credits, balance, credited) VALUES (:n, 'x', 0, 1, :b, :b) "
            "RETURNING id"), {"n": f"sa-{uuid.uuid4().hex[:6]}", "b": 10**15})).scalar_one()
        for i in range(rounds):
            await conn.execute(text("INSERT INTO holds (request_id, key_id, amount, tokens, instance, created_at, "
                                    "expires_at) VALUES (:r, :k, 100000000, 100, 'sa', 0, 0)"),
                               {"r": f"s{i}", "k": key_id})
    timings = []
    for i in range(rounds):
        start = time.perf_counter()
        async with engine.begin() as conn:
            row = (await conn.execute(select_key, {"p0": key_id})).one()
            (await conn.execute(delete_hold, {"p0": f"s{i}"})).one()
            values = (f"s{i}", 0, key_id, None, None, "m", "p", None, 1, 0, 200, None, 2, 300, 0, 0, 0, 0, 0, None,
                      4506000, 4506000, 10**8, None, 0, 0)
            await conn.execute(insert_usage, {f"p{j}": v for j, v in enumerate(values)})
            account = (row[15] + 10**8 - 4506000, 0, row[17], row[18] + 4506000, None, 0, 0, 0, 0, 0, key_id)
            await conn.execute(write_account, {f"p{j}": v for j, v in enumerate(account)})
            rollup = (0, key_id, "m", "p", 1, 0, 2, 300, 0, 0, 0, 0, 4506000, 4506000, 0, 0, 0, 0, 0, 0)
            await conn.execute(upsert, {f"p{j}": v for j, v in enumerate(rollup)})
        timings.append(time.perf_counter() - start)
    await engine.dispose()
    return statistics.median(timings) * 1e6


async def compare(postgres: str | None, rounds: int = 500) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ccm-bench-cmp-") as folder:
        out["sqlite_ccm_us"] = await one_settle_ccm(f"sqlite:///{folder}/a.db", rounds)
        out["sqlite_sqlalchemy_aiosqlite_us"] = await one_settle_sqlalchemy(f"sqlite:///{folder}/b.db", rounds)
    if postgres:
        for label, work in (("postgres_ccm_asyncpg_us", one_settle_ccm),
                            ("postgres_sqlalchemy_asyncpg_us", one_settle_sqlalchemy)):
            name = f"ccm_cmp_{uuid.uuid4().hex[:8]}"
            await _postgres_database(postgres, "CREATE", name)
            try:
                out[label] = await work(postgres.rsplit("/", 1)[0] + "/" + name, rounds)
            finally:
                await _postgres_database(postgres, "DROP", name)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is created and dropped on it)")
    parser.add_argument("--sqlalchemy", action="store_true", help="also time one settle with SQLAlchemy Core 2")
    options = parser.parse_args(argv)
    results = asyncio.run(measure(options.rows, options.requests, options.postgres))
    print(f"settle (admit + settle), SQLite, 64 at a time  {results['settle_per_s']:>10,.0f} requests/s  (>= 1,000)")
    print(f"settle (local, no hold), SQLite                 {results['local_settle_per_s']:>10,.0f} requests/s")
    if "postgres_settle_per_s" in results:
        print(f"settle (admit + settle), PostgreSQL            {results['postgres_settle_per_s']:>10,.0f} requests/s")
        print(f"settle (local, no hold), PostgreSQL            {results['postgres_local_settle_per_s']:>10,.0f} "
              "requests/s")
    print(f"usage --by day over {results['rows']:,} rows            {results['usage_by_day_s'] * 1000:>10.1f} ms"
          "          (< 1,000)")
    print(f"CSV export of {results['rows']:,} rows                  {results['export_rows_per_s']:>10,.0f} rows/s"
          "      (>= 200,000)")
    if options.sqlalchemy:
        results["sqlalchemy"] = asyncio.run(compare(options.postgres))
        for name, value in results["sqlalchemy"].items():
            print(f"one settle, {name:<40} median {value:>8.0f} µs")
    print(json.dumps(results, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
