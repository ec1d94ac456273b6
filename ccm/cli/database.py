"""The ledger database on the command line: the shared `--db` option, the error edge, and `ccm db`.

`--db URL` (or `CCM_DB`) names the database: `sqlite:///path/to/ccm.db`, a plain path, or
`postgresql://user:password@host/db`; by default the SQLite file `${XDG_DATA_HOME:-~/.local/share}/ccm/ccm.db`.
Every ledger error ends the command here with `error:` and `hint:` lines on stderr and exit status 1; an input
refused before the database is touched writes nothing, and one refused inside a transaction rolls it back.

    ccm db upgrade     apply the migrations this ccm has and the database lacks (creates an empty one)
    ccm db status      the database's schema version against this ccm's
    ccm db check       the ledger's invariant over every key, and the rollups against every usage row
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from ccm.ledger.errors import LedgerError
from ccm.ledger.store.base import default_url, redact

T = TypeVar("T")

db_option = click.option(
    "--db", "db", envvar="CCM_DB", default=None, metavar="URL",
    help="The ledger database: sqlite:///path, a path, or postgresql://… (env CCM_DB; default "
         "${XDG_DATA_HOME:-~/.local/share}/ccm/ccm.db).",
)


def database_url(db: str | None) -> str:
    return db or default_url()


def fail(error: LedgerError) -> None:
    click.echo(f"error: {error.message}", err=True)
    if error.hint:
        click.echo(f"hint: {error.hint}", err=True)
    raise SystemExit(1)


def run(work: Awaitable[T]) -> T:
    """Run one command's coroutine; a ledger error is its message, not a traceback."""
    try:
        return asyncio.run(work)  # type: ignore[arg-type]
    except LedgerError as error:
        fail(error)
        raise  # unreachable: fail exits


def ledger_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Ledger errors raised while a command checks its input (before any coroutine runs) end it the same way."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LedgerError as error:
            fail(error)

    return wrapper


@click.group()
def db() -> None:
    """The ledger database: upgrade, status, check."""


@db.command()
@db_option
def upgrade(db: str | None) -> None:
    """Apply the migrations the database lacks (an empty or missing one is created)."""
    from ccm.ledger.store.connect import open_store
    from ccm.ledger.store.migrate import latest

    async def work() -> None:
        store = await open_store(database_url(db), check=False)
        try:
            applied = await store.migrate()
            version = await store.schema_version()
        finally:
            await store.close()
        if version > latest(store.dialect):
            raise LedgerError(f"{store.url} is at schema version {version}, newer than this ccm knows "
                              f"({latest(store.dialect)})", "upgrade ccm")
        done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
        click.echo(f"{store.url}: schema version {version} ({done})")

    run(work())


@db.command()
@db_option
def status(db: str | None) -> None:
    """The database's schema version and this ccm's."""
    from ccm.ledger.store.connect import open_store
    from ccm.ledger.store.migrate import latest

    async def work() -> None:
        store = await open_store(database_url(db), create=False, check=False)
        try:
            version = await store.schema_version()
        finally:
            await store.close()
        want = latest(store.dialect)
        state = "up to date" if version == want else "behind: run `ccm db upgrade`" if version < want else "ahead"
        click.echo(f"{store.url}: schema version {version}, this ccm's {want} ({state})")

    run(work())


@db.command("check")
@db_option
def check_command(db: str | None) -> None:
    """Check `balance = credits - settled - open holds` for every key, and the rollups against the usage rows."""
    from ccm.ledger.ledger import opened

    async def work() -> list[str]:
        async with opened(database_url(db), create=False) as ledger:
            return await ledger.audit(deep=True)

    problems = run(work())
    for problem in problems:
        click.echo(problem, err=True)
    click.echo(f"{redact(database_url(db))}: " + (f"{len(problems)} problems" if problems else "the ledger balances"))
    if problems:
        raise SystemExit(1)
