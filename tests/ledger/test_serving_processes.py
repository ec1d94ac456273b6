"""The ledger across processes and crashes, through real `ccm run`s: `--workers 2` on one SQLite file and two ccm
processes on one PostgreSQL database serve exactly the requests a balance covers; `kill -9` under streaming load,
again and again, leaves no completed answer without its row, no row twice, and no hold behind after a restart."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes import CcmServer, FakeAnthropic, Reply, serve

from .test_serving import ANSWER_COST, BODY, JSON, OUTPUT, ROUTES, UPSTREAM_KEY, cli, new_key, usage_json

pytestmark = pytest.mark.slow

KILLS = 20


@pytest.fixture
def upstream() -> Iterator[tuple[str, FakeAnthropic]]:
    reply = Reply(text="hello there", output_tokens=OUTPUT, pieces=6, chunk_delay=0.01)
    with serve(FakeAnthropic(UPSTREAM_KEY, default=reply)) as (url, fake):
        yield url, fake


def environ(upstream: tuple[str, FakeAnthropic]) -> dict[str, str]:
    return {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": UPSTREAM_KEY}


async def burst(urls: list[str], secret: str, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        answers = await asyncio.gather(*(client.post(f"{urls[i % len(urls)]}/v1/messages", json=BODY,
                                                     headers={**JSON, "x-api-key": secret})
                                         for i in range(count)))
    return [a.status_code for a in answers]


def assert_exactly_covered(database_url: str, statuses: list[int], covered: int, name: str) -> None:
    assert statuses.count(200) == covered, statuses
    assert statuses.count(402) == len(statuses) - covered
    assert len([row for row in usage_json(database_url) if row["key"] == name]) == covered
    checked = cli("db", "check", db=database_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_workers_on_one_sqlite_file_serve_exactly_what_the_balance_covers(
    upstream: tuple[str, FakeAnthropic], database_url: str, tmp_path: Path
) -> None:
    covered = 23
    secret = new_key(database_url, "workers", "--credits", f"{covered * ANSWER_COST:.6f}")
    args = ("--db", database_url, "--workers", "2")
    with CcmServer.from_text(tmp_path, ROUTES, environ(upstream), args=args) as ccm:
        statuses = asyncio.run(burst([ccm.url], secret, 500))
    assert_exactly_covered(database_url, statuses, covered, "workers")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_ccm_processes_on_one_postgres_database_serve_exactly_what_the_balance_covers(
    upstream: tuple[str, FakeAnthropic], database_url: str, tmp_path: Path
) -> None:
    covered = 23
    secret = new_key(database_url, "hosts", "--credits", f"{covered * ANSWER_COST:.6f}")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    with CcmServer.from_text(first, ROUTES, environ(upstream), args=("--db", database_url)) as one, \
            CcmServer.from_text(second, ROUTES, environ(upstream), args=("--db", database_url)) as other:
        statuses = asyncio.run(burst([one.url, other.url], secret, 500))
    assert_exactly_covered(database_url, statuses, covered, "hosts")


async def stream_until_killed(url: str, secret: str | None, completed: list[str], stop: asyncio.Event) -> None:
    """Streams, one after another, until `stop`; each answer read to its `message_stop` is `completed`. Without a
    secret, as the local caller."""
    headers = {**JSON, "x-api-key": secret} if secret is not None else JSON
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            try:
                async with client.stream("POST", f"{url}/v1/messages", json={**BODY, "stream": True},
                                         headers=headers) as answer:
                    body = b"".join([chunk async for chunk in answer.aiter_bytes()])
                    if answer.status_code == 200 and b"event: message_stop" in body:
                        completed.append(answer.headers["request-id"])
            except httpx.HTTPError:
                return  # the server is gone


def test_kill_9_under_streaming_load_loses_no_row_and_leaves_no_hold(
    upstream: tuple[str, FakeAnthropic], database_url: str, tmp_path: Path
) -> None:
    # a key with credit (a hold, settled before the last bytes), a key with nothing to check and the local caller
    # (rows journaled before the last bytes, written to the database behind the answers)
    secrets = [new_key(database_url, "crash", "--credits", "100"), new_key(database_url, "unchecked"), None]
    completed: list[str] = []
    rng = random.Random(7)
    server = CcmServer.from_text(tmp_path, ROUTES, environ(upstream), args=("--db", database_url))

    async def round_() -> None:
        stop = asyncio.Event()
        clients = [asyncio.create_task(stream_until_killed(server.url, secrets[n % 3], completed, stop))
                   for n in range(9)]
        await asyncio.sleep(rng.uniform(0.6, 1.4))  # a fresh process answers its first stream in ~0.5 s
        assert server._process is not None
        server._process.send_signal(signal.SIGKILL)
        server._process.wait(10)
        stop.set()
        await asyncio.gather(*clients)

    for _ in range(KILLS):
        server.start()
        asyncio.run(round_())
        server._process = None  # killed: nothing for stop() to do
    with server:  # a restart sweeps the dead processes' holds
        pass
    ids = [row["request_id"] for row in usage_json(database_url)]
    assert len(ids) == len(set(ids)), "a request has two rows"
    missing = set(completed) - set(ids)
    assert not missing, f"{len(missing)} of {len(completed)} completed answers have no row"
    assert len(completed) > KILLS  # the load was real
    shown = json.loads(cli("keys", "show", "crash", "--format", "json", db=database_url).stdout)
    assert shown["held"] == "$0.00", shown
    checked = cli("db", "check", db=database_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
