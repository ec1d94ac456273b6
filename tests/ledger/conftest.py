"""The ledger's tests run on a real SQLite file and a real PostgreSQL database, never skipped.

PostgreSQL is `CCM_TEST_POSTGRES` (default postgresql://postgres@127.0.0.1:5432/test, what the project's machines
and CI run); each test gets a database of its own, created and dropped here. When none answers, the test fails
saying so: a ledger that is only tested on SQLite is not tested for several instances.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ccm.ledger.ledger import Ledger
from ccm.ledger.times import Micros

POSTGRES = os.environ.get("CCM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ("sqlite", "postgres")


def _admin_url() -> str:
    return POSTGRES


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(sql: str) -> None:
    try:
        conn = await asyncpg.connect(_admin_url(), timeout=10)
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES} ({error}): the ledger's tests need it (set "
                    "CCM_TEST_POSTGRES, or start PostgreSQL 15 on 127.0.0.1:5432 with trust auth for `postgres`)",
                    pytrace=False)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def make_database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    name = f"ccm_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    try:
        yield _with_database(POSTGRES, name)
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=STORES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database: a SQLite file, then a PostgreSQL database."""
    yield from make_database_url(request.param, tmp_path)


@pytest.fixture(scope="module", params=STORES)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database per store for a module's tests that only read, or that must leave it unchanged."""
    yield from make_database_url(request.param, tmp_path_factory.mktemp("ledger"))


class FakeClock:
    """A clock the test moves (microseconds since the epoch)."""

    def __init__(self, at: Micros = 1_780_000_000_000_000) -> None:  # 2026-05-28
        self.at = at

    def __call__(self) -> Micros:
        return self.at

    def advance(self, micros: Micros) -> None:
        self.at += micros


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def ledger(database_url: str, clock: FakeClock) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(database_url, clock=clock)
    await opened.start(background=False)
    try:
        yield opened
    finally:
        await opened.stop()
