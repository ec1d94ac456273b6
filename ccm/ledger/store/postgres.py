"""The PostgreSQL store: asyncpg, one pool per process; several processes and hosts share one database.

An operation runs in one transaction on one pooled connection (READ COMMITTED; a `Q` with `lock` reads its rows
`FOR UPDATE`, so two instances admitting on one key take turns on its row). Read-only operations run in a
REPEATABLE READ READ ONLY transaction: one consistent snapshot. Statements are written with `?` and numbered here
once per text; asyncpg prepares and caches each per connection.

Every asyncpg and socket error is translated here, once: an unreachable server, a refused login or a missing
database is `LedgerUnavailable` naming the URL with its password hidden.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from ccm.ledger.errors import LedgerError, LedgerUnavailable
from ccm.ledger.store.base import Op, Q, Rows, Store, redact
from ccm.ledger.store.migrate import VERSION_TABLE, migrations

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0
# One lock id for migrations, so two instances starting at once do not both create the schema.
_MIGRATION_LOCK = 0x63636D  # "ccm"


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2…` (the ledger's SQL has no `?` inside literals)."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


def _unavailable(error: BaseException, url: str) -> LedgerUnavailable:
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return LedgerUnavailable(f"the ledger database {url} does not exist", url,
                                 "create it (createdb NAME), or fix the name in --db / CCM_DB")
    if isinstance(error, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        return LedgerUnavailable(f"PostgreSQL refused the login for {url}: {error}", url,
                                 "check the user and password in --db / CCM_DB")
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return LedgerUnavailable(f"the ledger database {url} cannot be reached: {text}", url,
                             "check that PostgreSQL is running and that host, port and database are right")


def _translate(error: BaseException, url: str) -> BaseException:
    if isinstance(error, LedgerError):
        return error
    if isinstance(error, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError,
                          asyncpg.CannotConnectNowError, asyncpg.InvalidCatalogNameError,
                          asyncpg.InvalidPasswordError)):
        return _unavailable(error, url)
    if isinstance(error, asyncpg.PostgresError):
        return LedgerError(f"the ledger database {url} refused a statement: {error}")
    return error


class PostgresStore(Store):
    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url = url

    @classmethod
    async def open(cls, url: str, *, max_size: int = 10) -> PostgresStore:
        """No connection floor (`min_size=0`): asyncpg restores a floor from a background task that, while the server
        is away, logs a traceback at every retry; connections are opened as requests need them, and the first one
        here, so a wrong URL is said at once."""
        shown = redact(url)
        pool: asyncpg.Pool | None = None
        try:
            pool = await asyncpg.create_pool(url, min_size=0, max_size=max_size, timeout=CONNECT_TIMEOUT_S,
                                             command_timeout=60)
            async with pool.acquire():
                pass
        except BaseException as error:
            if pool is not None:
                pool.terminate()
            translated = _translate(error, shown)
            if isinstance(error, ValueError):  # asyncpg's own parse of a malformed DSN
                translated = LedgerUnavailable(f"`{shown}` is not a PostgreSQL URL asyncpg can read: {error}",
                                               shown, "write postgresql://user:password@host:5432/db")
            if translated is error:
                raise
            raise translated from None
        return cls(pool, shown)

    async def run(self, op: Op[T], *, write: bool = True, deadline: float | None = None) -> T:
        """With a `deadline`, waiting for a connection and the transaction on it each get that long: past it the
        connection is terminated (closing its socket ends every wait on it at once, where a cancelled query would
        still wait for its ROLLBACK and the server's reply to a cancel request) and `LedgerUnavailable` raised."""
        watchdog: asyncio.TimerHandle | None = None
        overdue: list[bool] = []

        def terminate(conn: Any) -> None:
            overdue.append(True)
            conn.terminate()

        try:
            async with self._pool.acquire(timeout=deadline) as conn:
                if deadline is not None:
                    watchdog = asyncio.get_running_loop().call_later(deadline, terminate, conn)
                if write:
                    async with conn.transaction(isolation="read_committed"):
                        return await _drive(op, conn)
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await _drive(op, conn)
        except BaseException as error:
            if deadline is not None and (isinstance(error, TimeoutError) or overdue):
                raise LedgerUnavailable(f"the ledger database {self.url} did not answer within {deadline:g} s",
                                        self.url, "check that PostgreSQL is running and reachable") from error
            translated = _translate(error, self.url)
            if translated is error:
                raise
            raise translated from error
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def stream(self, sql: str, params: Sequence[Any] = (), chunk: int = 5000,
                     prepare: Sequence[Q] = ()) -> AsyncIterator[Rows]:
        try:
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                for q in prepare:
                    await conn.execute(numbered(q.sql), *q.params)
                cursor = await conn.cursor(numbered(sql), *params)
                while True:
                    records = await cursor.fetch(chunk)
                    if not records:
                        return
                    yield [tuple(r) for r in records]
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise _translate(error, self.url) from error

    async def schema_version(self) -> int:
        async def read(conn: asyncpg.Connection) -> int:
            exists = await conn.fetchval("SELECT to_regclass('ccm_schema_version') IS NOT NULL")
            if not exists:
                tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                          "AND tablename IN ('keys', 'usage', 'holds')")
                if tables:
                    raise LedgerUnavailable(f"{self.url} has tables named like the ledger's but no "
                                            "ccm_schema_version: it is not a ccm ledger", self.url)
                return 0
            return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM ccm_schema_version"))

        version: int = await self._with(read)
        return version

    async def migrate(self, to: int | None = None) -> list[int]:
        async def apply(conn: asyncpg.Connection) -> list[int]:
            done: list[int] = []
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(VERSION_TABLE)
                current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM ccm_schema_version")
                for migration in migrations("postgres"):
                    if migration.version <= current or (to is not None and migration.version > to):
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute("INSERT INTO ccm_schema_version (version, name, applied_at) "
                                       "VALUES ($1, $2, $3)",
                                       migration.version, migration.name, datetime.now(UTC).isoformat())
                    done.append(migration.version)
            return done

        applied: list[int] = await self._with(apply)
        return applied

    async def _with(self, work: Any) -> Any:
        try:
            async with self._pool.acquire() as conn:
                return await work(conn)
        except BaseException as error:
            translated = _translate(error, self.url)
            if translated is error:
                raise
            raise translated from error

    async def close(self) -> None:
        await self._pool.close()


async def _drive(op: Op[T], conn: Any) -> T:
    try:
        q = next(op)
        while True:
            sql = numbered(q.sql) + (" FOR UPDATE" if q.lock else "")
            records = await conn.fetch(sql, *q.params)
            q = op.send([tuple(r) for r in records])
    except StopIteration as done:
        result: T = done.value
        return result
