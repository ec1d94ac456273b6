"""Opening the store a database URL names: SQLite or PostgreSQL, its schema checked.

The drivers are imported only for the kind of database asked for (asyncpg is not loaded for a SQLite file).
"""

from __future__ import annotations

from ccm.ledger.errors import BadDatabaseURL
from ccm.ledger.store.base import Store, redact, sqlite_path


async def open_store(url: str, *, create: bool = True, check: bool = True) -> Store:
    """The store a URL names, opened; its schema checked (`check`): an empty database is created when `create`, one
    behind or ahead of this ccm raises `SchemaMismatch` with what to do."""
    path = sqlite_path(url)
    store: Store
    if path is not None:
        from ccm.ledger.store.sqlite import SQLiteStore

        store = await SQLiteStore.open(path, url=url, create=create)
    elif url.startswith(("postgresql://", "postgres://")):
        from ccm.ledger.store.postgres import PostgresStore

        store = await PostgresStore.open(url)
    else:
        scheme = url.split(":", 1)[0]
        raise BadDatabaseURL(f"`{redact(url)}`: unknown kind of database `{scheme}`",
                             "use sqlite:///path/to/ccm.db or postgresql://user:password@host/db")
    if check:
        from ccm.ledger.store.migrate import check_schema

        try:
            await check_schema(store, create=create)
        except BaseException:
            await store.close()
            raise
    return store
