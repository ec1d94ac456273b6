"""The ledger taken away from a real `ccm run` and given back: `ledger fail closed` and `ledger fail open` on the
request path, on PostgreSQL behind a TCP proxy the test cuts (every connection closed, new ones refused) and
restores.

    fail closed   while the database is away every metered request — a key's, the local caller's — gets 503
                  `api_error` with `x-should-retry: true` and `retry-after`; /health says since when; once it is
                  back, requests are served again; a database that stops answering (a stall, not a cut) holds a
                  request for ccm's deadline, seconds, not for the driver's timeouts
    fail open     the local caller and a key with nothing to check are served, their rows journaled and written
                  once the database is back (exactly one row per request, by request id); a key whose credit,
                  budget or limits would have to be checked gets the same 503 as under `fail closed`
    mid-stream    a stream whose settle meets the outage is answered in full, under either policy: its hold was
                  taken before the outage, and its row waits in the journal and closes the hold when written;
                  one whose hold must grow after the cut stops with an `api_error` event under `fail closed` (not
                  the `billing_error` of a key out of credit) and goes on past its hold under `fail open`
    SQLite        its outage is a write lock another process keeps past the busy timeout: under `fail open` the
                  local caller and the unchecked key are served at once, the key with credit gets the 503, and the
                  journal is written once the lock is let go

Every test ends with the database checked by `ccm db check` and no hold left.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from ccm.ledger.journal import lines_of, row_from_json
from tests.fakes import CcmServer, FakeAnthropic, Reply, serve
from tests.fakes.tcp_proxy import TcpProxy

from .conftest import POSTGRES, make_database_url
from .test_serving import BODY, JSON, OUTPUT, ROUTES, UPSTREAM_KEY, cli, new_key, usage_json

pytestmark = pytest.mark.slow

SLOW_STREAM = Reply(text="a slow answer, streamed in many pieces", output_tokens=OUTPUT, pieces=10, chunk_delay=0.25)


@pytest.fixture
def upstream() -> Iterator[tuple[str, FakeAnthropic]]:
    with serve(FakeAnthropic(UPSTREAM_KEY, default=Reply(text="hello there", output_tokens=OUTPUT))) as (url, fake):
        yield url, fake


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database (the URL the CLI and the checks use, never cut)."""
    yield from make_database_url("postgres", tmp_path)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    target = urlsplit(POSTGRES)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as relay:
        yield relay


def through(proxy: TcpProxy, database: str) -> str:
    """`database`'s URL with the proxy's port: what `ccm run` is given."""
    parts = urlsplit(database)
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl()


def start_ccm(tmp_path: Path, upstream: tuple[str, FakeAnthropic], db: str, policy: str) -> CcmServer:
    routes = f"settings {{\n  ledger fail {policy}\n}}\n\n{ROUTES}"
    env = {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": UPSTREAM_KEY}
    return CcmServer.from_text(tmp_path, routes, env, args=("--db", db)).start()


@contextmanager
def paid_and_served(tmp_path: Path, upstream: tuple[str, FakeAnthropic], database: str, proxy: TcpProxy,
                    policy: str) -> Iterator[tuple[CcmServer, str]]:
    """`ccm run` under `ledger fail POLICY` on the database through the proxy, and the secret of a key with credit;
    ccm is stopped on the way out, before the test checks the database."""
    paid = new_key(database, "paid", "--credits", "1")
    ccm = start_ccm(tmp_path, upstream, through(proxy, database), policy)
    try:
        yield ccm, paid
    finally:
        ccm.stop()


def ask(ccm: CcmServer, secret: str | None = None) -> httpx.Response:
    headers = {**JSON, "x-api-key": secret} if secret is not None else JSON
    return httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers=headers, timeout=30)


def served_id(ccm: CcmServer, secret: str | None = None) -> str:
    """Ask and expect it served: the request's id."""
    answer = ask(ccm, secret)
    assert answer.status_code == 200, answer.text
    return answer.headers["request-id"]


def ledger_health(ccm: CcmServer) -> dict[str, Any]:
    answer = httpx.get(f"{ccm.url}/health", timeout=10)
    assert answer.status_code == 200
    section: dict[str, Any] = answer.json()["ledger"]
    return section


def wait_for(ccm: CcmServer, done: Any, what: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = ledger_health(ccm)
        if done(health):
            return health
        assert time.monotonic() < deadline, f"{what} within {timeout} s: /health says {health}\n{ccm.logs()}"
        time.sleep(0.2)


def assert_unavailable_answer(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "api_error"
    assert "ledger is unavailable" in answer.json()["error"]["message"]
    # Claude Code (the Anthropic SDK) retries a 5xx, after `retry-after` seconds; the outage is expected to pass
    assert answer.headers["x-should-retry"] == "true"
    assert int(answer.headers["retry-after"]) >= 1


async def _open_holds(database: str) -> int:
    conn = await asyncpg.connect(database, timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM holds"))
    finally:
        await conn.close()


def assert_consistent(database: str, served: list[str]) -> list[dict[str, Any]]:
    """Every served request has exactly one row, the invariant holds, and no hold is open. The rows."""
    rows = usage_json(database)
    ids = [row["request_id"] for row in rows]
    assert len(ids) == len(set(ids)), f"a request has two rows: {sorted(ids)}"
    missing = set(served) - set(ids)
    assert not missing, f"{len(missing)} of {len(served)} served requests have no row"
    checked = cli("db", "check", db=database)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert asyncio.run(_open_holds(database)) == 0
    return [dict(row) for row in rows]


def journal_files(tmp_path: Path) -> list[Path]:
    """The journal's files of the ccm started in `tmp_path` (its data folder: XDG_DATA_HOME, see CcmServer)."""
    return sorted((tmp_path / "data").glob("ccm/journal/*/ccm-journal-*.jsonl"))


def test_fail_closed_answers_503_while_the_database_is_away_and_serves_again_once_it_is_back(
    upstream: tuple[str, FakeAnthropic], database: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    with paid_and_served(tmp_path, upstream, database, proxy, "closed") as (ccm, paid):
        served = [served_id(ccm, secret) for secret in (paid, None)]
        assert ledger_health(ccm)["available"] is True
        asked = len(upstream[1].message_requests())

        proxy.cut()
        cut_at = time.time()
        started = time.monotonic()
        assert_unavailable_answer(ask(ccm, paid))
        health = ledger_health(ccm)
        assert health["available"] is False and health["failure_policy"] == "closed"
        since = time.mktime(time.strptime(health["unavailable_since"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert cut_at - 2 <= since <= time.time() + 1
        assert_unavailable_answer(ask(ccm))  # the local caller is not served either
        assert_unavailable_answer(ask(ccm, paid))
        assert time.monotonic() - started < 10  # refused at once, not after a driver's timeout
        assert len(upstream[1].message_requests()) == asked  # nothing went upstream unmetered

        proxy.restore()
        served += [served_id(ccm, paid), served_id(ccm)]
        health = wait_for(ccm, lambda h: h["available"], "the ledger available again")
        assert "unavailable_since" not in health and "journaled" not in health
        assert "Traceback" not in ccm.logs()  # the outage is said in ccm's own lines, once
    rows = assert_consistent(database, served)
    assert len(rows) == len(served)  # the refused requests left no row
    assert not journal_files(tmp_path)


def test_fail_open_serves_and_journals_what_needs_no_check_and_writes_each_row_once_when_the_database_is_back(
    upstream: tuple[str, FakeAnthropic], database: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    paid = new_key(database, "paid", "--credits", "1")  # a balance to check: never spent unchecked
    free = new_key(database, "free")  # nothing to check: metered only
    stranger = new_key(database, "stranger")  # nothing to check either, but never seen by this ccm before the cut
    ccm = start_ccm(tmp_path, upstream, through(proxy, database), "open")
    try:
        assert ledger_health(ccm)["failure_policy"] == "open"  # the file's, before any request read it
        served = [served_id(ccm, secret) for secret in (paid, free, None)]

        proxy.cut()
        during = [served_id(ccm, secret) for secret in (free, None, free, None)]
        assert_unavailable_answer(ask(ccm, paid))  # its balance cannot be checked
        assert_unavailable_answer(ask(ccm, stranger))  # it cannot be told from a forged key
        # the rows served during the outage, and a row from before it that was not written yet, maybe
        health = wait_for(ccm, lambda h: h.get("journaled", 0) >= len(during), "the rows journaled")
        assert health["available"] is False and health["failure_policy"] == "open"
        assert "unavailable_since" in health
        lines = [line for path in journal_files(tmp_path) for line in lines_of(path)]
        assert len(lines) == health["journaled"]
        assert set(during) <= {row_from_json(json.loads(line)).request_id for line in lines}

        proxy.restore()
        wait_for(ccm, lambda h: h["available"] and "journaled" not in h, "the journal written to the ledger")
        assert not [line for path in journal_files(tmp_path) for line in lines_of(path)]
        served += [*during, served_id(ccm, paid)]
        assert "Traceback" not in ccm.logs()
    finally:
        ccm.stop()
    rows = assert_consistent(database, served)
    assert len(rows) == len(served)
    keys = {row["request_id"]: row["key"] for row in rows}
    assert [keys[request] for request in during] == ["free", "(local)", "free", "(local)"]
    assert not journal_files(tmp_path)


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_a_stream_whose_settle_meets_the_outage_is_answered_in_full_and_has_one_row_once_the_database_is_back(
    upstream: tuple[str, FakeAnthropic], database: str, proxy: TcpProxy, tmp_path: Path, policy: str
) -> None:
    with paid_and_served(tmp_path, upstream, database, proxy, policy) as (ccm, paid):
        upstream[1].script(SLOW_STREAM, SLOW_STREAM)

        async def streams() -> list[tuple[int, bytes, str]]:
            async def one(secret: str | None, begun: asyncio.Event) -> tuple[int, bytes, str]:
                headers = {**JSON, "x-api-key": secret} if secret is not None else JSON
                async with httpx.AsyncClient(timeout=30) as client, client.stream(
                        "POST", f"{ccm.url}/v1/messages", json={**BODY, "stream": True}, headers=headers) as answer:
                    chunks = []
                    async for chunk in answer.aiter_bytes():
                        chunks.append(chunk)
                        begun.set()
                    return answer.status_code, b"".join(chunks), answer.headers["request-id"]

            begun = [asyncio.Event(), asyncio.Event()]
            tasks = [asyncio.create_task(one(paid, begun[0])), asyncio.create_task(one(None, begun[1]))]
            for event in begun:  # both admitted and streaming: their ends (and settles) are 2 s and more away
                await asyncio.wait_for(event.wait(), 20)
            proxy.cut()
            return await asyncio.gather(*tasks)

        answers = asyncio.run(streams())
        for status, body, _ in answers:
            assert status == 200
            assert b"event: message_stop" in body and b"event: error" not in body, body.decode()
        wait_for(ccm, lambda h: h["available"] is False, "the outage seen")
        proxy.restore()
        wait_for(ccm, lambda h: h["available"] and "journaled" not in h, "the journal written to the ledger")
    rows = assert_consistent(database, [request for _, _, request in answers])
    keys = {row["request_id"]: row["key"] for row in rows}
    assert [keys[request] for _, _, request in answers] == ["paid", "(local)"]
    shown = json.loads(cli("keys", "show", "paid", "--format", "json", db=database).stdout)
    assert shown["held"] == "$0.00", shown
    assert not journal_files(tmp_path)


def test_a_database_that_stops_answering_holds_a_request_for_seconds_not_for_the_drivers_timeouts(
    upstream: tuple[str, FakeAnthropic], database: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    # a stall, not a cut: the connections stay open and nothing comes back (a hung host, a dropped network), where
    # only ccm's own deadline (REQUEST_DEADLINE_S, 5 s) ends the wait: asyncpg's is 60 s per statement
    with paid_and_served(tmp_path, upstream, database, proxy, "closed") as (ccm, paid):
        served = [served_id(ccm, paid)]
        proxy.stall()
        for secret in (paid, None):  # an open connection that never answers; a new one whose handshake never does
            started = time.monotonic()
            assert_unavailable_answer(ask(ccm, secret))
            assert time.monotonic() - started < 12
        assert "did not answer within 5 s" in ccm.logs()
        assert ledger_health(ccm)["available"] is False
        proxy.restore()
        served.append(served_id(ccm, paid))
    assert len(assert_consistent(database, served)) == len(served)


def test_fail_open_on_a_sqlite_file_another_process_keeps_locked(
    upstream: tuple[str, FakeAnthropic], tmp_path: Path
) -> None:
    # SQLite's outage: the file is there and readable (WAL), but another process holds its write lock past the busy
    # timeout (10 s), so keys are still looked up while nothing can be written
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    paid = new_key(database, "paid", "--credits", "1")
    free = new_key(database, "free")
    ccm = start_ccm(tmp_path, upstream, database, "open")
    try:
        served = [served_id(ccm, paid)]
        locker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            during = []
            for secret in (None, free):
                started = time.monotonic()
                during.append(served_id(ccm, secret))
                assert time.monotonic() - started < 2  # journaled, not waiting for the lock
            assert_unavailable_answer(ask(ccm, paid))  # its hold cannot be written
            wait_for(ccm, lambda h: h.get("journaled", 0) >= len(during), "the rows journaled")
            journal = tmp_path / "ledger.db.usage-journal"
            lines = [line for path in journal.glob("ccm-journal-*.jsonl") for line in lines_of(path)]
            assert set(during) <= {row_from_json(json.loads(line)).request_id for line in lines}
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_for(ccm, lambda h: h["available"] and "journaled" not in h, "the journal written to the ledger")
        served += during
    finally:
        ccm.stop()
    rows = usage_json(database)
    ids = [row["request_id"] for row in rows]
    assert sorted(ids) == sorted(served)  # each once; the refused request left none
    checked = cli("db", "check", db=database)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shown = json.loads(cli("keys", "show", "paid", "--format", "json", db=database).stdout)
    assert shown["held"] == "$0.00", shown
    assert not list((tmp_path / "ledger.db.usage-journal").glob("ccm-journal-*.jsonl"))


LONG_TEXT = "".join(f"word{i:03d} " for i in range(40))  # 320 characters in 12 pieces, 0.3 s apart
LONG_STREAM = Reply(text=LONG_TEXT, output_tokens=80, pieces=12, chunk_delay=0.3)
# held for 1,174 output tokens: the hold must grow once more than 150 characters are out (`HoldPolicy.margin` is
# 1,024), in the 6th piece, after the cut at 1 s (by then at most 128 characters are out)
GROWING = {**BODY, "max_tokens": 1024 + 150, "stream": True}


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_a_stream_whose_hold_must_grow_during_the_outage(
    upstream: tuple[str, FakeAnthropic], database: str, proxy: TcpProxy, tmp_path: Path, policy: str
) -> None:
    with paid_and_served(tmp_path, upstream, database, proxy, policy) as (ccm, paid):
        upstream[1].script(LONG_STREAM)

        async def stream() -> tuple[bytes, str]:
            async with httpx.AsyncClient(timeout=30) as client, client.stream(
                    "POST", f"{ccm.url}/v1/messages", json=GROWING, headers={**JSON, "x-api-key": paid}) as answer:
                assert answer.status_code == 200
                cut = asyncio.get_running_loop().call_later(1.0, proxy.cut)
                body = b"".join([chunk async for chunk in answer.aiter_bytes()])
                cut.cancel()
                return body, answer.headers["request-id"]

        body, request = asyncio.run(stream())
        if policy == "open":  # on past its hold (an overshoot bounded by max_tokens)
            assert b"event: message_stop" in body and b"event: error" not in body, body.decode()
        else:  # stopped where its hold ran out, saying why: not the key's credit, which billing_error would say
            assert b"event: message_stop" not in body
            assert b'"type":"api_error"' in body.replace(b" ", b"") and b"usage ledger became unavailable" in body
            assert b"billing_error" not in body
        proxy.restore()
        wait_for(ccm, lambda h: h["available"] and "journaled" not in h, "the journal written to the ledger")
    (row,) = assert_consistent(database, [request])
    assert row["key"] == "paid"
