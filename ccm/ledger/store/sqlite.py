"""The SQLite store: stdlib `sqlite3`, WAL, one writer thread with group commit, one reader thread.

Every write goes to one thread that owns the write connection. It takes whatever operations are queued (up to
`BATCH`), runs them in one `BEGIN IMMEDIATE` transaction, each inside its own savepoint (an operation that raises
is rolled back alone and its caller gets the exception), commits once, and only then resolves the callers' futures:
a settle that returned is on disk. While it commits, the next batch queues up, so the commit rate, not the request
rate, bounds the cost of durability. `synchronous=NORMAL` in WAL mode survives a killed process (what the kill -9
tests check); only a power cut may lose the last commits.

`BEGIN IMMEDIATE` takes SQLite's write lock up front, so several processes on one file (`--workers 2`) serialise
their transactions: admission reads and writes a key's account inside one of them, never check-then-write. Waiting
for the lock is bounded by `busy_timeout`.

Reads (authenticate, reports) run on a second connection in a reader thread, each operation in one read
transaction (a consistent snapshot; WAL readers never wait for the writer). The event loop only ever waits on
futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ccm.ledger.errors import BadDatabaseURL, LedgerError, LedgerUnavailable
from ccm.ledger.store.base import Op, Q, Rows, Store, drive
from ccm.ledger.store.migrate import VERSION_TABLE, migrations

T = TypeVar("T")
BATCH = 512
BUSY_TIMEOUT_S = 10.0

# sqlite3 "adapts" every parameter that is not an int, float, str or bytes: it asks the protocol type for
# `__adapt__`, which raises and formats an AttributeError before the value is bound as it is (~2,000 instructions
# for each None, and a usage row binds up to a dozen: 15% of writing one). An adapter registered for None is found
# first. (It changes nothing else: the value bound is the same NULL, and no base type is adapted.)
sqlite3.register_adapter(type(None), lambda value: value)

_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_STOP = object()


def _connect(path: Path, *, write: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    if write:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _execute(conn: sqlite3.Connection) -> Callable[[Q], Rows]:
    def execute(q: Q) -> Rows:
        return conn.execute(q.sql, tuple(q.params)).fetchall()

    return execute


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class _Worker(threading.Thread):
    """A thread that owns one connection and runs jobs from a queue: in batches, one transaction per batch, when
    `write`; one read transaction per job otherwise."""

    def __init__(self, path: Path, url: str, *, write: bool) -> None:
        super().__init__(name=f"ccm-ledger-{'writer' if write else 'reader'}", daemon=True)
        self.path, self.url, self.write = path, url, write
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.conn: sqlite3.Connection | None = None
        self.ready = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self.conn = _connect(self.path, write=self.write)
        except sqlite3.Error as error:
            self.failure = _unavailable(error, self.url)
            return
        finally:
            self.ready.set()
        try:
            while True:
                first = self.jobs.get()
                if first is _STOP:
                    return
                batch: list[_Job] = [first]
                while len(batch) < (BATCH if self.write else 1):
                    try:
                        job = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        self.jobs.put(_STOP)
                        break
                    batch.append(job)
                if self.write:
                    self._commit(batch)
                else:
                    self._read(batch[0])
        finally:
            self.conn.close()

    def _commit(self, batch: list[_Job]) -> None:
        conn = self.conn
        assert conn is not None
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for work, future, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = work(conn)
                except BaseException as error:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((future, None, _translate(error, self.url)))
                else:
                    conn.execute("RELEASE op")
                    results.append((future, value, None))
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = _unavailable(error, self.url)
            results = [(future, None, failure) for _, future, _ in batch]
        self._hand_back(batch, results)

    def _read(self, job: _Job) -> None:
        conn = self.conn
        assert conn is not None
        work, future, _ = job
        try:
            conn.execute("BEGIN")
            try:
                value = work(conn)
            finally:
                conn.execute("COMMIT")
            result: tuple[asyncio.Future[Any], Any, BaseException | None] = (future, value, None)
        except BaseException as error:
            result = (future, None, _translate(error, self.url))
        self._hand_back([job], [result])

    @staticmethod
    def _hand_back(batch: list[_Job], results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        # One wake-up per event loop per batch, not one per caller.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for (_, _, loop), result in zip(batch, results, strict=True):
            by_loop.setdefault(loop, []).append(result)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, items)

    def submit(self, work: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.jobs.put((work, future, loop))
        return future


def _translate(error: BaseException, url: str) -> BaseException:
    if isinstance(error, LedgerError) or not isinstance(error, sqlite3.Error):
        return error
    if isinstance(error, sqlite3.OperationalError):
        return _unavailable(error, url)
    return LedgerError(f"the ledger database {url} refused a write: {error}")


def _unavailable(error: sqlite3.Error, url: str) -> LedgerUnavailable:
    return LedgerUnavailable(f"the ledger database {url} cannot be used: {error}", url,
                             "check that the file's directory exists and is writable, and that the disk is not full")


class SQLiteStore(Store):
    dialect = "sqlite"

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        self._writer = _Worker(path, url, write=True)
        self._reader = _Worker(path, url, write=False)
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, url: str | None = None, create: bool = True) -> SQLiteStore:
        url = url or f"sqlite:///{path}"
        if path.is_dir():
            raise BadDatabaseURL(f"`{url}` is a directory", "name a file in it: sqlite:///path/to/ccm.db")
        if not path.exists():
            if not create:
                raise LedgerUnavailable(f"the ledger database {url} does not exist", url,
                                        "run `ccm db upgrade` to create it")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise LedgerUnavailable(f"cannot create the directory of {url}: {error.strerror}", url) from None
        store = cls(path, url)
        for worker in (store._writer, store._reader):
            worker.start()
            await asyncio.to_thread(worker.ready.wait)
            if worker.failure is not None:
                await store.close()
                raise worker.failure
        return store

    async def run(self, op: Op[T], *, write: bool = True, deadline: float | None = None) -> T:
        # `deadline` is for a server that stops answering; a wait for this file's lock is bounded by BUSY_TIMEOUT_S
        if self._closed:
            raise LedgerUnavailable("the ledger is closed", self.url)
        worker = self._writer if write else self._reader
        result: T = await worker.submit(lambda conn: drive(op, _execute(conn)))
        return result

    async def stream(self, sql: str, params: Sequence[Any] = (), chunk: int = 5000,
                     prepare: Sequence[Q] = ()) -> AsyncIterator[Rows]:
        """Rows in chunks from a connection of its own, in a thread of its own, at most four chunks ahead."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Rows | BaseException | None] = asyncio.Queue()
        room = threading.Semaphore(4)
        stop = threading.Event()

        def produce() -> None:
            try:
                conn = _connect(self.path, write=False)
                try:
                    for q in prepare:
                        conn.execute(q.sql, tuple(q.params))
                    cursor = conn.execute(sql, tuple(params))
                    while not stop.is_set():
                        rows = cursor.fetchmany(chunk)
                        if not rows:
                            break
                        room.acquire()
                        loop.call_soon_threadsafe(chunks.put_nowait, rows)
                finally:
                    conn.close()
                loop.call_soon_threadsafe(chunks.put_nowait, None)
            except BaseException as error:  # handed to the consumer
                loop.call_soon_threadsafe(chunks.put_nowait, _translate(error, self.url))

        thread = threading.Thread(target=produce, name="ccm-ledger-export", daemon=True)
        thread.start()
        try:
            while True:
                item = await chunks.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                room.release()
                yield item
        finally:
            stop.set()
            room.release()

    async def schema_version(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'ccm_schema_version'").fetchall()
            if not exists:
                tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                if tables:
                    raise LedgerUnavailable(f"{self.url} is a SQLite database, but not ccm's ledger "
                                            f"(it has tables {', '.join(t[0] for t in tables[:5])})", self.url)
                return 0
            row = conn.execute("SELECT MAX(version) FROM ccm_schema_version").fetchone()
            return int(row[0] or 0)

        version: int = await self._reader.submit(read)
        return version

    async def migrate(self, to: int | None = None) -> list[int]:
        def apply(conn: sqlite3.Connection) -> list[int]:
            conn.execute(VERSION_TABLE)
            current = conn.execute("SELECT MAX(version) FROM ccm_schema_version").fetchone()[0] or 0
            done = []
            for migration in migrations("sqlite"):
                if migration.version <= current or (to is not None and migration.version > to):
                    continue
                for statement in migration.statements():
                    conn.execute(statement)
                conn.execute("INSERT INTO ccm_schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                             (migration.version, migration.name, datetime.now(UTC).isoformat()))
                done.append(migration.version)
            return done

        # All pending migrations in the writer's one transaction (SQLite's DDL is transactional).
        applied: list[int] = await self._writer.submit(apply)
        return applied

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in (self._writer, self._reader):
            if worker.is_alive():
                worker.jobs.put(_STOP)
        for worker in (self._writer, self._reader):
            if worker.is_alive():
                await asyncio.to_thread(worker.join)
