"""The storage interface: a database driver is three methods; every ledger operation is written once, above them.

An operation (`ccm.ledger.store.ops`) is a generator that yields SQL (`Q`) and receives the rows back, so one piece
of code serves SQLite, whose driver runs it synchronously in its one writer thread, and PostgreSQL, whose driver
awaits each statement on a pooled connection. A driver runs an operation in one transaction (`run(op, write=True)`):
all of it commits or none of it does; an operation that raises rolls back. SQL is written with `?` placeholders; a
`Q` with `lock` reads its rows `FOR UPDATE` on PostgreSQL (on SQLite, the writer's `BEGIN IMMEDIATE` already holds the
database's write lock across processes).

    Store (this ABC)            run(op, write) · stream(sql, params) · close()
    ├── SQLiteStore             stdlib sqlite3, WAL, one writer thread with group commit, one reader thread
    └── PostgresStore           asyncpg pool

`open_store(url)` picks the driver from a URL: `sqlite:///path/to/ccm.db` (or a plain path) or
`postgresql://user:password@host:5432/db`. Errors name the URL with its password hidden (`redact`).
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ccm.frozen import frozen
from ccm.ledger.errors import BadDatabaseURL

T = TypeVar("T")
Row: TypeAlias = tuple[Any, ...]
Rows: TypeAlias = list[Row]


@frozen
class Q:
    """One SQL statement with `?` placeholders. `lock`: the rows read are locked until the transaction ends."""

    sql: str
    params: Sequence[Any] = ()
    lock: bool = False


Op: TypeAlias = Generator[Q, Rows, T]


class Store(ABC):
    """A ledger database. `url` is the redacted URL (safe to log)."""

    url: str
    dialect: str  # "sqlite" | "postgres"

    @abstractmethod
    async def run(self, op: Op[T], *, write: bool = True, deadline: float | None = None) -> T:
        """Run `op` in one transaction (read-only when not `write`) and return what it returns. `deadline`: the
        seconds it may wait on a database server before it is abandoned as `LedgerUnavailable` (the request path:
        a server that stopped answering must not hold requests; SQLite, a local file, has its busy timeout)."""

    @abstractmethod
    def stream(self, sql: str, params: Sequence[Any] = (), chunk: int = 5000,
               prepare: Sequence[Q] = ()) -> AsyncIterator[Rows]:
        """A long query's rows in chunks, read without holding everything in memory (exports); `prepare` runs first
        on the same connection (a temporary table the query joins)."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The migration the database is at (0: empty)."""

    @abstractmethod
    async def migrate(self, to: int | None = None) -> list[int]:
        """Apply the migrations after the database's version, each in its own transaction; the versions applied."""

    @abstractmethod
    async def close(self) -> None:
        """Finish what is queued, then close every connection."""


def drive(op: Op[T], execute: Any) -> T:
    """Run a generator operation against a synchronous `execute(q) -> rows` (SQLite's driver)."""
    try:
        q = next(op)
        while True:
            q = op.send(execute(q))
    except StopIteration as done:
        result: T = done.value
        return result


# --- URLs ----------------------------------------------------------------------------------------------------------


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "ccm" / "ccm.db"


def default_url(environ: Mapping[str, str] = os.environ) -> str:
    """`CCM_DB`, else the SQLite file under `${XDG_DATA_HOME:-~/.local/share}/ccm/ccm.db`."""
    return environ.get("CCM_DB") or f"sqlite:///{default_path(environ)}"


def redact(url: str) -> str:
    """The URL with its password replaced by `***` (`postgresql://user:***@host/db`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if _port(parts) else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _port(parts: Any) -> int | None:
    try:
        port: int | None = parts.port
        return port
    except ValueError:
        return None


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None when `url` is not a SQLite URL or path."""
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        rest = rest[2:] if rest.startswith("//") else rest
        if not rest or rest == "/":
            raise BadDatabaseURL(f"`{url}` names no file", "write sqlite:///path/to/ccm.db")
        if rest.startswith("/:memory:") or rest == ":memory:":
            raise BadDatabaseURL("an in-memory SQLite database would lose the ledger at exit",
                                 "name a file: sqlite:///path/to/ccm.db")
        return Path(rest).expanduser()
    if "://" not in url and not url.startswith(("postgresql:", "postgres:")):
        return Path(url).expanduser()
    return None


