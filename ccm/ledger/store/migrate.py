"""Versioned migrations: `migrations/NNNN_name.{sqlite,postgres}.sql`, applied in order; all pending ones in one
transaction with the rows that record them in `ccm_schema_version` (an upgrade is applied entirely or not at all;
on PostgreSQL under an advisory lock, so two instances starting at once do not both apply it).

Alembic would need SQLAlchemy, which the stores do not use (docs/keys-and-credits.md#storage has the measurement);
what the ledger needs from it — ordered, transactional, recorded, refused when the database is ahead — is this
file. Every migration exists for both dialects, with the same number; `ccm db upgrade` applies them, and at open a
database behind or ahead of this ccm is refused with what to do. An empty database is created at open.
"""

from __future__ import annotations

import re
import sqlite3
from functools import cache
from importlib import resources

from ccm.frozen import frozen
from ccm.ledger.errors import SchemaMismatch
from ccm.ledger.store.base import Store

_NAME = re.compile(r"([0-9]{4})_([a-z0-9_]+)\.(sqlite|postgres)\.sql")

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS ccm_schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at TEXT    NOT NULL
)"""


@frozen
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file split into statements (`sqlite3.complete_statement` knows where each ends)."""
        out: list[str] = []
        pending = ""
        for line in self.sql.splitlines(keepends=True):
            pending += line
            if sqlite3.complete_statement(pending):
                if pending.strip().strip(";").strip() and not _only_comments(pending):
                    out.append(pending.strip())
                pending = ""
        if pending.strip() and not _only_comments(pending):
            out.append(pending.strip())
        return out


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


@cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("ccm.ledger.store").joinpath("migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match and match.group(3) == dialect:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    assert versions == list(range(1, len(found) + 1)), f"migrations for {dialect} are not numbered 1..n: {versions}"
    return tuple(found)


def latest(dialect: str) -> int:
    return len(migrations(dialect))


async def check_schema(store: Store, *, create: bool) -> None:
    version = await store.schema_version()
    want = latest(store.dialect)
    if version == 0 and create:
        await store.migrate()
        return
    if version < want:
        raise SchemaMismatch(
            f"the ledger database {store.url} is at schema version {version}; this ccm needs {want}",
            f"run `ccm db upgrade --db {store.url}` (back the database up first)" if version else
            f"run `ccm db upgrade --db {store.url}` to create it")
    if version > want:
        raise SchemaMismatch(
            f"the ledger database {store.url} is at schema version {version}, newer than this ccm knows ({want})",
            "upgrade ccm on this machine to the version that upgraded the database")
