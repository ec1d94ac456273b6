"""Server time of the ledger's pages (the dashboard at `/`, the admin's keys pages) with a million usage rows in the
ledger (figures in docs/ui.md; target: p50 <= 50 ms per page). Run by hand:

    .venv/bin/python -m bench.bench_key_pages [--rows 1000000] [--keys 1000] [--rounds 50] [--postgres URL]

The ledger is filled by bulk insert straight into its tables (usage rows and their daily rollups, as settling would
have left them): `--rows` rows over 30 days among `--keys` keys, a third of them on one heavy key — the key the
dashboard and the key page are measured for, so their 24-hour window holds ~11,000 of its rows. Each page is then
requested `--rounds` times in-process (httpx over ASGI, as bench/bench_pages.py: no socket, no browser) through the
whole service with its ledger open; p50 and p90 are printed per page. `--postgres URL`: the same on a database
created (and dropped) on that server, filled with COPY.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ccm.ledger.ledger import Ledger
from ccm.ledger.records import NewKey
from ccm.ledger.store.ops import USAGE_COLUMNS
from ccm.ledger.times import DAY, now
from ccm.service import ServiceOptions, build_service
from ccm.web import mount_pages

REPO = Path(__file__).resolve().parent.parent
DAYS = 30
HEAVY_SHARE = 3  # one row in three is the heavy key's
MODELS = [("sonnet", "anthropic", "claude-sonnet-5-5"), ("opus", "anthropic", "claude-opus-5-5"),
          ("haiku", "anthropic", "claude-haiku-5-5"), ("gpt", "openai", "gpt-5")]
# The keys' accounts brought in line with the rows (what settling them would have left; the audit then holds).
SETTLED = ("UPDATE keys SET settled = COALESCE((SELECT SUM(charged) FROM rollup_daily r WHERE r.key_id = keys.id), 0)",
           "UPDATE keys SET balance = credited - settled - held")
_ROLLUP_COLUMNS = ("day", "key_id", "model", "provider", "requests", "errors", "input", "output", "cache_write_5m",
                   "cache_write_1h", "cache_read", "web_search", "upstream", "charged", "c_input", "c_output",
                   "c_cache_write_5m", "c_cache_write_1h", "c_cache_read", "c_web_search")


def generate(rows: int, keys: range, heavy: int) -> tuple[Iterator[list[tuple[Any, ...]]], dict[tuple[Any, ...],
                                                                                                 list[int]]]:
    """The usage rows in batches (a generator) and, filled as it runs, their daily rollups."""
    chance = random.Random(16)
    end = now()
    start = end - DAYS * DAY
    rollups: dict[tuple[Any, ...], list[int]] = {}
    step = DAYS * DAY // rows

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        batch = []
        for i in range(rows):
            ts = start + i * step + chance.randrange(step)
            key = heavy if i % HEAVY_SHARE == 0 else chance.choice(keys)
            model, provider, upstream_model = MODELS[i % len(MODELS)]
            tokens = (chance.randint(1, 50), chance.randint(10, 2000), chance.randint(0, 3000), 0,
                      chance.randint(0, 80_000), 0)
            upstream = charged = chance.randint(10**5, 10**8)
            failed = i % 41 == 0
            batch.append((f"req-{i}", ts, key, f"session-{i // 50}", "default", model, provider, upstream_model, 1, 1,
                          529 if failed else 200, "overloaded_error" if failed else None, *tokens,
                          chance.randint(300, 9000), 300, upstream, charged, None, None, 0, 0))
            sums = rollups.setdefault((ts // DAY, key, model, provider), [0] * 16)
            for j, value in enumerate((1, int(failed), *tokens, upstream, charged, 0, charged, 0, 0, 0, 0)):
                sums[j] += value
            if len(batch) == 50_000:
                yield batch
                batch = []
        yield batch

    return batches(), rollups


def fill_sqlite(path: Path, rows: int, keys: range, heavy: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    batches, rollups = generate(rows, keys, heavy)
    insert = f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
    for batch in batches:
        conn.executemany(insert, batch)
    conn.executemany(f"INSERT INTO rollup_daily VALUES ({', '.join('?' * 20)})", [(*k, *v) for k, v in rollups.items()])
    for statement in SETTLED:
        conn.execute(statement)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def fill_postgres(url: str, rows: int, keys: range, heavy: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        batches, rollups = generate(rows, keys, heavy)
        for batch in batches:
            await conn.copy_records_to_table("usage", records=batch, columns=list(USAGE_COLUMNS))
        await conn.copy_records_to_table("rollup_daily", records=[(*k, *v) for k, v in rollups.items()],
                                         columns=list(_ROLLUP_COLUMNS))
        for statement in SETTLED:
            await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE")  # what autovacuum would have done by now (the visibility map)
    finally:
        await conn.close()


async def prepare(url: str, rows: int, key_count: int, postgres: bool) -> tuple[str, str]:
    """The ledger at `url` made and filled; the heavy key's name and secret."""
    ledger = await Ledger.open(url)
    try:
        heavy, secret = await ledger.create_key(NewKey("heavy", credits=10**13, budget=10**12, period="month",
                                                       rpm=600, tpm=2_000_000))
        for number in range(1, key_count):  # through the ledger: secrets and credit entries as real ones
            await ledger.create_key(NewKey(f"key-{number:04d}", credits=10**10 if number % 2 else None))
        found = await ledger.keys()
    finally:
        await ledger.store.close()
    ids = range(min(k.id for k, _ in found), max(k.id for k, _ in found) + 1)
    start = time.perf_counter()
    if postgres:
        await fill_postgres(url, rows, ids, heavy.id)
    else:
        fill_sqlite(Path(url.removeprefix("sqlite:///")), rows, ids, heavy.id)
    print(f"filled {rows:,} usage rows in {time.perf_counter() - start:.1f} s ({key_count:,} keys)")
    return heavy.name, secret


async def measure(url: str, secret: str, rounds: int, folder: Path) -> None:
    shutil.copy(REPO / "routes.ccm", folder / "routes.ccm")
    service = build_service(folder / "routes.ccm", {}, ServiceOptions(watch=False, db=url))
    mount_pages(service, {})
    async with service.running():
        transport = httpx.ASGITransport(app=service.app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3456") as admin, \
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3456") as holder:
            form = await holder.get("/signin")
            nonce = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            signed = await holder.post("/signin", data={"csrf": nonce, "key": secret, "next": "/"})
            assert signed.status_code == 303, signed.text
            page = await admin.get("/admin/keys")
            token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            names = (f"bench-{uuid.uuid4().hex[:10]}" for _ in range(rounds))
            cases: list[tuple[str, httpx.AsyncClient, str, str, Any, int]] = [
                ("GET /  (the dashboard)", holder, "GET", "/", None, 200),
                ("GET /signin", holder, "GET", "/signin", None, 200),
                ("GET /admin/keys", admin, "GET", "/admin/keys", None, 200),
                ("GET /admin/keys/heavy", admin, "GET", "/admin/keys/heavy", None, 200),
                ("POST /admin/keys (create)", admin, "POST", "/admin/keys",
                 lambda: {"csrf": token, "name": next(names), "credits": "5"}, 201),
                ("POST /admin/keys/heavy/credits", admin, "POST", "/admin/keys/heavy/credits",
                 lambda: {"csrf": token, "amount": "0.01"}, 303),
                ("GET /admin/usage.csv (heavy, 1 h)", admin, "GET", "/admin/usage.csv?key=heavy&since=1h", None, 200),
            ]
            for label, client, method, path, data, status in cases:
                times = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    response = await client.request(method, path, data=data() if data else None)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == status, (label, response.status_code, response.text[:300])
                times.sort()
                print(f"{label:36s} p50 {statistics.median(times):6.1f} ms   p90 {times[int(len(times) * .9)]:6.1f} ms")


async def main(options: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ccm-bench-pages-"))
    try:
        url = f"sqlite:///{folder / 'ccm.db'}"
        _, secret = await prepare(url, options.rows, options.keys, postgres=False)
        print("SQLite:")
        await measure(url, secret, options.rounds, folder)
        if options.postgres:
            import asyncpg

            name = f"ccm_bench_{uuid.uuid4().hex[:8]}"
            server = await asyncpg.connect(options.postgres)
            await server.execute(f"CREATE DATABASE {name}")
            try:
                url = options.postgres.rsplit("/", 1)[0] + "/" + name
                _, secret = await prepare(url, options.rows, options.keys, postgres=True)
                print("PostgreSQL:")
                await measure(url, secret, options.rounds, folder)
            finally:
                await server.execute(f"DROP DATABASE {name} WITH (FORCE)")
                await server.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_key_pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is created and dropped on it)")
    asyncio.run(main(parser.parse_args()))
