"""The journal (ccm.ledger.journal): rows that hold nothing are in a file before the answer ends and in the ledger
soon after; a killed process's files are replayed once, a running process's never; rows replayed twice count once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from ccm.ledger.cost import cost
from ccm.ledger.journal import LINE, Journal, journal_folder, lines_of, replay, row_from_json, row_json
from ccm.ledger.ledger import Ledger
from ccm.ledger.records import NewKey, UsageRow
from ccm.ledger.store.base import Op, Q
from ccm.table import Price
from ccm.usage import TokenUsage
from tests.ledger.helpers import usd

PRICE = Price(input=Decimal(3), output=Decimal(15))
USAGE = TokenUsage(input=1_000, output=200)


def row(request_id: str | None = None) -> UsageRow:
    return UsageRow(request_id=request_id or uuid.uuid4().hex, usage=USAGE, cost=cost(USAGE, PRICE), price=PRICE,
                    model="sonnet", provider="anthropic", status=200)


async def recorded(url: str) -> tuple[int, int]:
    """(rows, charged nano-dollars) in the ledger at `url`."""
    def count() -> Op[tuple[int, int]]:
        rows = yield Q("SELECT COUNT(*), COALESCE(SUM(charged), 0) FROM usage")
        return int(rows[0][0]), int(rows[0][1])

    ledger = await Ledger.open(url)
    try:
        return await ledger.store.run(count(), write=False)
    finally:
        await ledger.store.close()


def files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_rows_are_on_disk_when_added_and_in_the_ledger_after_a_flush(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "journal"

    async def main() -> None:
        ledger = await Ledger.open(database_url)
        journal = await Journal.open(folder, ledger)
        rows = [row() for _ in range(50)]
        for each in rows:
            journal.add(each)
        assert journal.pending == 50
        (written,) = files(folder)
        assert len(lines_of(folder / written)) == 50  # in the file before anything is awaited
        await journal.flush()
        assert journal.pending == 0
        assert lines_of(folder / written) == []  # its rows are in: their lines are zeroed, the file takes the next
        await journal.close()
        assert files(folder) == []
        await ledger.store.close()

    asyncio.run(main())
    assert asyncio.run(recorded(database_url)) == (50, 50 * cost(USAGE, PRICE).charged)


def test_the_writer_writes_rows_behind_the_answers(database_url: str, tmp_path: Path) -> None:
    async def main() -> int:
        ledger = await Ledger.open(database_url)
        journal = await Journal.open(tmp_path / "journal", ledger)
        failures: list[object] = []
        writer = asyncio.create_task(journal.run(failures.append, lambda: None))
        for _ in range(20):
            journal.add(row())
            await asyncio.sleep(0.002)
        for _ in range(200):  # the writer lingers ~10 ms after the first row, then writes what gathered
            if journal.pending == 0:
                break
            await asyncio.sleep(0.01)
        pending = journal.pending
        writer.cancel()
        await journal.close()
        await ledger.store.close()
        assert not failures
        return pending

    assert asyncio.run(main()) == 0
    assert asyncio.run(recorded(database_url))[0] == 20


KILLED = """
import asyncio, os, sys, uuid
from decimal import Decimal
from pathlib import Path
from ccm.ledger.journal import Journal
from ccm.ledger.ledger import Ledger
sys.path.insert(0, {tests!r})
from ledger.test_journal import row

async def main():
    ledger = await Ledger.open({url!r})
    journal = await Journal.open(Path({folder!r}), ledger)
    for _ in range(30):
        journal.add(row())
    os._exit(9)  # as a kill -9 would: nothing flushed, nothing closed

asyncio.run(main())
"""


def test_a_killed_processs_rows_are_replayed_once_at_the_next_start(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    script = KILLED.format(tests=str(Path(__file__).parents[1]), url=database_url, folder=str(folder))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    (left,) = files(folder)
    assert asyncio.run(recorded(database_url))[0] == 0

    async def start_and_stop() -> None:
        ledger = await Ledger.open(database_url)
        journal = await Journal.open(folder, ledger)
        await journal.close()
        await ledger.store.close()

    asyncio.run(start_and_stop())
    assert left not in files(folder)
    assert asyncio.run(recorded(database_url))[0] == 30


def test_a_running_processs_file_is_left_alone_and_a_row_written_twice_counts_once(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "journal"

    async def main() -> None:
        ledger = await Ledger.open(database_url)
        running = await Journal.open(folder, ledger)
        same = row()
        running.add(same)
        assert await replay(folder, ledger) == 0  # its file is locked by the journal writing it
        assert running.pending == 1
        # a crash between the commit and the file's removal: the next start writes the row again
        await running.flush()
        again = await Journal.open(folder, ledger)
        again.add(same)
        await again.flush()
        await running.close()
        await again.close()
        await ledger.store.close()

    asyncio.run(main())
    assert asyncio.run(recorded(database_url))[0] == 1


def test_a_line_cut_by_a_crash_is_skipped_and_the_rest_replayed(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    folder.mkdir()

    async def main() -> None:
        ledger = await Ledger.open(database_url)
        writer = await Journal.open(folder, ledger)
        for _ in range(3):
            writer.add(row())
        (name,) = files(folder)
        lines = lines_of(folder / name)
        writer._current.close()  # the writing process is gone; its last line was cut mid-copy
        (folder / name).write_bytes(b"\n".join(lines) + b"\n" + lines[0][:40] + bytes(100))
        assert await replay(folder, ledger) == 3
        assert files(folder) == []
        await ledger.store.close()

    asyncio.run(main())
    assert asyncio.run(recorded(database_url))[0] == 3


def test_a_process_swaps_between_two_files_and_a_killed_processs_empty_files_are_removed_quietly(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "journal"

    async def main() -> None:
        ledger = await Ledger.open(database_url)
        journal = await Journal.open(folder, ledger)
        for _ in range(5):
            journal.add(row())
        (first,) = files(folder)
        await journal.flush()  # the rows are in: their file is emptied, and the answers append to the other one
        pair = files(folder)
        assert first in pair and len(pair) == 2
        assert all(lines_of(folder / name) == [] for name in pair)
        for _ in range(3):
            journal.add(row())
        await journal.flush()
        assert files(folder) == pair  # the same two files, each batch: none is made or removed
        assert journal._spare is not None
        for file in (journal._current, journal._spare):  # the process is killed: its locks go with it
            file.close()
        with caplog.at_level("INFO", logger="ccm.ledger"):
            assert await replay(folder, ledger) == 0
        assert files(folder) == [] and not [r for r in caplog.records if "replayed" in r.getMessage()]
        await ledger.store.close()

    asyncio.run(main())
    assert asyncio.run(recorded(database_url))[0] == 8


def test_a_file_grows_when_its_rows_outgrow_it_and_every_row_is_kept_then_written_a_batch_at_a_time(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ccm.ledger.journal.SIZE", 4096)  # ~16 rows
    monkeypatch.setattr("ccm.ledger.journal.BATCH_ROWS", 64)
    folder = tmp_path / "journal"
    batches: list[int] = []

    async def main() -> None:
        ledger = await Ledger.open(database_url)
        record_many = ledger.record_many

        async def counted(rows: list[UsageRow]) -> int:
            batches.append(len(rows))
            return await record_many(rows)

        monkeypatch.setattr(ledger, "record_many", counted)
        journal = await Journal.open(folder, ledger)
        rows = [row() for _ in range(200)]  # what an outage leaves: more than a file holds, more than a batch
        for each in rows:
            journal.add(each)
        (name,) = files(folder)
        assert (folder / name).stat().st_size > 4096
        ids = [row_from_json(orjson.loads(line)).request_id for line in lines_of(folder / name)]
        assert ids == [each.request_id for each in rows]
        await journal.flush()
        assert batches == [64, 64, 64, 8]  # one transaction a batch, not one for the whole backlog
        assert lines_of(folder / name) == [] and (folder / name).stat().st_size == 4096  # back to its first size
        await journal.close()
        await ledger.store.close()

    asyncio.run(main())
    assert asyncio.run(recorded(database_url))[0] == 200


def test_lines_are_arrays_and_an_older_ccms_objects_are_still_replayed(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    folder.mkdir()
    new, old = row(), row()
    values = row_json(old)
    assert isinstance(row_json(new), list) and len(values) == len(LINE)
    (folder / "ccm-journal-1-0000-1.jsonl").write_bytes(  # a killed older ccm's file: one object a line
        orjson.dumps(row_json(new)) + b"\n" + orjson.dumps(dict(zip(LINE, values, strict=True))) + b"\n")
    assert row_from_json(orjson.loads(orjson.dumps(row_json(old)))) == old

    async def main() -> None:
        ledger = await Ledger.open(database_url)
        assert await replay(folder, ledger) == 2
        await ledger.store.close()

    asyncio.run(main())
    assert asyncio.run(recorded(database_url)) == (2, 2 * cost(USAGE, PRICE).charged)


def test_each_database_has_a_journal_of_its_own(tmp_path: Path) -> None:
    beside = journal_folder(f"sqlite:///{tmp_path}/a.db")
    assert beside.name == "a.db.usage-journal" and beside.parent.samefile(tmp_path)
    one = journal_folder("postgresql://ccm:secret@db.internal:5432/one")
    other = journal_folder("postgresql://ccm:secret@db.internal:5432/other")
    assert one != other and one.parent == other.parent
    assert "secret" not in str(one)


def test_a_row_the_ledger_refuses_is_dropped_and_the_rest_of_its_batch_written(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        ledger = await Ledger.open(database_url)
        key, _ = await ledger.create_key(NewKey("held", credits=usd("1")))
        await ledger.admit(key, "held-elsewhere", usd("0.01"), 100)
        journal = await Journal.open(tmp_path / "journal", ledger)
        good = [row() for _ in range(3)]
        for each in (good[0], row("held-elsewhere"), *good[1:]):  # its hold is key `held`'s, the row no key's
            journal.add(each)
        await journal.flush()
        assert journal.pending == 0
        await journal.close()
        await ledger.store.close()

    asyncio.run(main())
    assert asyncio.run(recorded(database_url)) == (3, 3 * cost(USAGE, PRICE).charged)
    assert "refused the usage row of request held-elsewhere" in caplog.text
