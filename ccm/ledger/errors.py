"""Everything the ledger raises, in one tree (the request path maps each to one answer; the CLI to one message).

    LedgerError
    ├── BadInput               a person's input the ledger will not take; nothing was written (message + hint)
    │   ├── BadAmount          (ccm.ledger.money) money that is NaN, negative, huge, not a number…
    │   ├── BadTime            a date or time that cannot be read, or is in the future where the past is meant
    │   ├── UnknownKey         no key of that name
    │   └── BadDatabaseURL     a --db / CCM_DB that names no database ccm can use
    ├── Refusal                (ccm.ledger.refusals) a request the key may not make now (401/402/429):
    │                          KeyRefused, OutOfCredit, OverBudget, RateLimited
    ├── DuplicateRequest       a request id admitted twice
    ├── SchemaMismatch         the database is behind or ahead of this ccm: run `ccm db upgrade`
    └── LedgerUnavailable      the database cannot be reached or written: the fail-open/closed policy decides

Store drivers translate their own exceptions (sqlite3, asyncpg, OSError) into these in one place each.
"""

from __future__ import annotations

__all__ = [
    "BadAmount", "BadDatabaseURL", "BadInput", "BadTime", "DuplicateRequest", "LedgerError", "LedgerUnavailable",
    "SchemaMismatch", "UnknownKey",
]


class LedgerError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class BadInput(LedgerError):
    pass


class BadAmount(BadInput):
    pass


class BadTime(BadInput):
    pass


class UnknownKey(BadInput):
    def __init__(self, name: str) -> None:
        super().__init__(f"no key named `{name}`", "`ccm keys list` shows the keys")
        self.name = name


class BadDatabaseURL(BadInput):
    pass


class DuplicateRequest(LedgerError):
    pass


class SchemaMismatch(LedgerError):
    pass


class LedgerUnavailable(LedgerError):
    """The database cannot be reached or written. `url` has its password hidden."""

    def __init__(self, message: str, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.url = url


