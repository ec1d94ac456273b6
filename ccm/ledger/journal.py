"""Usage rows on their way to the ledger, kept where a killed process cannot lose them.

    journal = await Journal.open(folder, ledger)   # replays the files a killed process left, starts a file of its own
    journal.add(row)                               # before the answer's last bytes go out: into the file's pages
    await journal.run()                            # the writer behind the answers (a lifespan task)
    await journal.flush()                          # everything added so far is in the ledger (reports, shutdown)
    journal.retry_now()                            # the ledger answers again: what failed to be written is retried
    await journal.close()

A request that holds nothing (the local caller, a key with no balance, budget or limits to check) does not wait for the
database. Its row is appended to this process's journal file before the answer's last bytes go out: copied into the
file's pages, mapped shared (mmap), which are the kernel's page cache: the kernel keeps them when the process is killed
and writes them out, as it would a write(2), just as SQLite's WAL at `synchronous=NORMAL` keeps a commit (neither
survives a power cut). A write(2) cost the event loop ~15 us of kernel time a request under load (2 us in a tight loop:
its path is cold between requests); a copy into a mapped page costs a page fault every ~16 rows. The rows are then
written to the ledger behind the answers, whatever arrived within `LINGER_S` of the first (or `BATCH_ROWS` of them, if
sooner) in one transaction: when each request waited for its own commit it paid a SQLite transaction (~0.5 ms of CPU
here) and two thread hops, and even 10 ms batches at 650 requests/s cost ~0.35 ms of CPU a request. Reports flush the
journal first; another process sees a row at most `LINGER_S` late. A row whose settle failed because the ledger is
unreachable (under either `ledger fail` policy: its answer was already admitted) waits here the same way, written once
the ledger answers (retried every `RETRY_S`, and at once on `retry_now`).

Files: `ccm-journal-<pid>-<token>-<n>.jsonl` in the journal's folder (`journal_folder`: one per database), each locked
with flock(2) by the process appending to it, `SIZE` bytes of disk taken when it is made (posix_fallocate: a full disk
is then an error there, not a SIGBUS when a row is copied into a page it cannot back), its lines followed by zeros; a
file doubles when its rows outgrow it (a long ledger outage; written `BATCH_ROWS` a transaction once it is back). A
process has two, and the answers append to one while the other's rows are written: before rows are written, the current
file is swapped for the other (empty) one; once they are in, their lines are zeroed and the file waits to be swapped
back. The files are made once, not a pair a batch: making and removing a file is ext4 metadata work (~0.1-0.3 ms each
here), and handing it to a worker thread cost the event loop more in GIL hand-offs than the work itself. A process that
starts replays the files nobody holds (a killed process's) and removes them. Rows are keyed by request id, so a row
written twice (a crash between the commit and the zeroing, or two starting processes replaying one file) is counted
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Any

import anyio
import orjson

from ccm.ledger.cost import cost
from ccm.ledger.errors import LedgerError, LedgerUnavailable
from ccm.ledger.ledger import Ledger
from ccm.ledger.records import UsageRow
from ccm.ledger.store.base import default_path, redact, sqlite_path
from ccm.table import Price
from ccm.usage import TokenUsage

log = logging.getLogger("ccm.ledger")

LINGER_S = 0.1  # how long rows gather after the first before they are written...
BATCH_ROWS = 500  # ...unless this many came sooner
RETRY_S = 5.0  # how often rows are tried again while the ledger is unreachable
PREFIX = "ccm-journal-"
SIZE = 1 << 20  # a journal file's size when made: ~4,000 rows
_usage_counts = attrgetter(*(f.name for f in fields(TokenUsage)))  # a TokenUsage's counts, in its fields' order


@dataclass(slots=True)
class _File:
    """One journal file of this process, mapped, and the rows in it (its descriptor holds the lock until closed)."""

    path: Path
    fd: int
    pages: mmap.mmap
    end: int = 0  # where the next line goes: the file holds zeros from here
    rows: list[UsageRow] = field(default_factory=list)

    def append(self, line: bytes) -> None:
        end = self.end + len(line)
        if end > len(self.pages):  # rows outgrew the file (a long ledger outage): it doubles, its disk taken first
            size = max(2 * len(self.pages), end)
            os.posix_fallocate(self.fd, len(self.pages), size - len(self.pages))
            self.pages.resize(size)
        self.pages[self.end:end] = line
        self.end = end

    def empty(self) -> None:
        """Its rows are in the ledger: zero their lines (a file grown by an outage back to `SIZE` first); it takes
        new lines from its start."""
        if len(self.pages) > SIZE:
            self.pages.resize(SIZE)
        used = min(self.end, SIZE)
        self.pages[:used] = bytes(used)
        self.end = 0
        self.rows = []

    def close(self) -> None:
        self.pages.close()
        os.close(self.fd)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.close()


class Journal:
    def __init__(self, folder: Path, ledger: Ledger) -> None:
        self.folder = folder
        self.ledger = ledger
        self._token = secrets.token_hex(4)
        self._count = 0
        self._current = self._new_file()  # where the answers' rows are appended
        self._written: _File | None = None  # swapped out: its rows are being written (or wait for the ledger)
        self._spare: _File | None = None  # empty: the next swap's (made at the first swap, then reused)
        self._added = asyncio.Event()
        self._full = asyncio.Event()  # BATCH_ROWS are waiting: write without lingering
        self._retry = asyncio.Event()  # the ledger answers again: stop waiting `RETRY_S`
        self._writing = asyncio.Lock()

    @classmethod
    async def open(cls, folder: Path, ledger: Ledger) -> Journal:
        """The journal of `folder`, after the files of processes that are gone are replayed into `ledger`."""
        folder.mkdir(parents=True, exist_ok=True)
        await replay(folder, ledger)
        return cls(folder, ledger)

    @property
    def pending(self) -> int:
        """Rows added and not yet in the ledger."""
        return len(self._current.rows) + (len(self._written.rows) if self._written is not None else 0)

    def add(self, row: UsageRow) -> None:
        """Append `row` to the journal file (the kernel has it when this returns) and queue it for the ledger."""
        if row.time is None:  # when it finished, not when it is written
            row = replace(row, time=self.ledger.clock())
        self._current.append(orjson.dumps(row_json(row), option=orjson.OPT_APPEND_NEWLINE))
        self._current.rows.append(row)
        self._added.set()
        if len(self._current.rows) >= BATCH_ROWS:
            self._full.set()

    async def run(self, away: Callable[[LedgerUnavailable], None], back: Callable[[], None], *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write rows to the ledger as they come (a lifespan task; cancel it, then `close`). `away` hears of the
        ledger being unreachable, `back` of a write that succeeded."""
        task_status.started()
        while True:
            await self._added.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), LINGER_S)
            self._added.clear()
            self._full.clear()
            try:
                await self.flush()
            except LedgerUnavailable as error:
                away(error)
                self._retry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry.wait(), RETRY_S)
                self._added.set()  # try again, new rows or not
            else:
                back()

    def retry_now(self) -> None:
        """The ledger was seen answering: rows waiting after a failed write are tried at once."""
        self._retry.set()

    async def flush(self) -> None:
        """Write every row added so far to the ledger; on `LedgerUnavailable` they stay journaled and it is raised.
        Rows added while it writes are the next flush's: under load the writer still lingers between batches."""
        async with self._writing:
            if self._written is not None:  # rows a write left behind when the ledger could not be reached
                await self._write_swapped()
            if self._current.rows:
                self._written, self._current = self._current, self._spare or self._new_file()
                self._spare = None
                await self._write_swapped()

    async def _write_swapped(self) -> None:
        """The swapped-out file's rows into the ledger, `BATCH_ROWS` a transaction (after an outage it holds all
        the rows of it), then its lines zeroed."""
        written = self._written
        assert written is not None
        while written.rows:
            await write_rows(self.ledger, written.rows[:BATCH_ROWS])
            del written.rows[:BATCH_ROWS]  # in the ledger (the file keeps their lines: replayed, they count once)
        written.empty()
        self._spare, self._written = written, None

    async def close(self) -> None:
        """Write what is pending (what cannot be written stays in its file, replayed at the next start)."""
        try:
            await self.flush()
        except LedgerUnavailable as error:
            log.warning("%d usage rows stay journaled in %s until the ledger answers (%s)", self.pending,
                        self.folder, error)
        finally:
            for file in (self._written, self._current, self._spare):
                if file is None:
                    continue
                if file.rows:
                    file.close()
                else:
                    file.remove()

    def _new_file(self) -> _File:
        """A file of this process's, locked before it gets the name a replaying process looks for."""
        self._count += 1
        name = f"{PREFIX}{os.getpid()}-{self._token}-{self._count}.jsonl"
        staging = self.folder / f".{name}"
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # its disk taken now: a full disk is an OSError here, where a copy into a page the file system cannot
            # back would be a SIGBUS that kills the process
            os.posix_fallocate(fd, 0, SIZE)
            pages = mmap.mmap(fd, SIZE)  # shared: what is copied in is the file's
        except BaseException:
            os.close(fd)
            staging.unlink(missing_ok=True)
            raise
        os.rename(staging, self.folder / name)
        return _File(self.folder / name, fd, pages)


def journal_folder(url: str) -> Path:
    """Where the journal of the ledger at `url` lives: beside a SQLite file (`ccm.db.usage-journal/`); for a server, in
    the data folder, under the database's redacted URL hashed (two databases never share a journal)."""
    database = sqlite_path(url)
    if database is not None:
        return database.with_name(database.name + ".usage-journal")
    return default_path().parent / "journal" / hashlib.sha256(redact(url).encode()).hexdigest()[:16]


async def replay(folder: Path, ledger: Ledger) -> int:
    """Write the rows of the journal files in `folder` that no process holds into `ledger`, then remove the files.
    The number of rows read."""
    replayed = 0
    for staging in folder.glob(f".{PREFIX}*.jsonl"):  # a process killed between creating a file and naming it
        _remove_if_unheld(staging)
    for path in sorted(folder.glob(f"{PREFIX}*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # another process replayed it meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a running process's
            os.close(fd)
            continue
        try:
            with open(fd, "rb", closefd=False) as locked:  # the file locked, even if its owner removed it meanwhile
                rows = list(_read_rows(path.name, locked.read()))
            if rows:  # a spare file (`Journal._spare`) holds none: only removed
                await write_rows(ledger, rows)
                replayed += len(rows)
                log.info("replayed %d usage rows from %s", len(rows), path.name)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return replayed


def _remove_if_unheld(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


async def write_rows(ledger: Ledger, rows: Sequence[UsageRow]) -> None:
    """Every row into the ledger, in one transaction. Should the ledger refuse one (a bug, not an outage), they are
    written one by one and the refused row is logged and dropped, so it cannot hold back the rest.
    `LedgerUnavailable` is raised as it comes (writing rows again is harmless: a row is recorded once)."""
    try:
        await ledger.record_many(rows)
        return
    except LedgerUnavailable:
        raise
    except LedgerError:
        pass
    for row in rows:
        try:
            await ledger.record(row)
        except LedgerUnavailable:
            raise
        except LedgerError as error:
            log.error("the ledger refused the usage row of request %s: %s", row.request_id, error)


def lines_of(path: Path) -> list[bytes]:
    """A journal file's lines (the zeros after them, and those of lines already written, left out)."""
    return _lines(path.read_bytes())


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.strip(b"\0").strip()]


def _read_rows(name: str, data: bytes) -> Iterable[UsageRow]:
    for number, line in enumerate(_lines(data), 1):
        try:
            yield row_from_json(orjson.loads(line))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            # only a line cut by a crash mid-copy (or mid-zeroing) can be malformed; the rest of the file is still read
            log.warning("%s:%d: not a usage row (%s); skipped", name, number, error)


@lru_cache(maxsize=256)
def _price_json(price: Price) -> dict[str, Any]:
    return price.model_dump(mode="json")


# A journal line: a row's values in this order, as a JSON array (building and dumping a list costs a third of what
# an object with these names does, ~7k instructions against ~21k, on the event loop before each answer ends).
LINE = ("request_id", "usage", "price", "markup", "key_id", "session", "rule", "model", "provider", "upstream_model",
        "attempts", "stream", "status", "error", "latency_ms", "ttft_ms", "estimated", "truncated", "time")


def row_json(row: UsageRow) -> list[Any]:
    """`row` as a journal line's values, in `LINE` order."""
    return [
        row.request_id, _usage_counts(row.usage),
        _price_json(row.price) if row.price is not None else None, str(row.markup), row.key_id, row.session,
        row.rule, row.model, row.provider, row.upstream_model, row.attempts, row.stream, row.status, row.error,
        row.latency_ms, row.ttft_ms, row.estimated, row.truncated, row.time,
    ]


def row_from_json(line: list[Any] | dict[str, Any]) -> UsageRow:
    """A row as `row_json` wrote it, its cost computed again from the same usage, price and markup (the same
    pure function gives the same amount). An object is a line from before the lines were arrays (a killed older
    process's journal, replayed after an upgrade), its values under the same names."""
    data = line if isinstance(line, dict) else dict(zip(LINE, line, strict=True))
    usage = TokenUsage(*data["usage"])
    price = Price.model_validate(data["price"]) if data["price"] is not None else None
    markup = Decimal(data["markup"])
    return UsageRow(
        request_id=data["request_id"], usage=usage, cost=cost(usage, price, markup), price=price, markup=markup,
        key_id=data["key_id"], session=data["session"], rule=data["rule"], model=data["model"],
        provider=data["provider"], upstream_model=data["upstream_model"], attempts=data["attempts"],
        stream=data["stream"], status=data["status"], error=data["error"], latency_ms=data["latency_ms"],
        ttft_ms=data["ttft_ms"], estimated=data["estimated"], truncated=data["truncated"], time=data["time"],
    )
