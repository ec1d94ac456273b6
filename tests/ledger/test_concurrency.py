"""Exactness under concurrency: N requests' worth of credit admits exactly N, in one process or several, and a
process killed with -9 at any moment leaves no duplicate, no lost settle and no hold behind."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from ccm.ledger.ledger import Ledger
from ccm.ledger.records import NO_LIMITS, KeyInfo, Limits, NewKey, limits_of
from ccm.ledger.refusals import OutOfCredit, OverBudget
from ccm.ledger.store.base import Op, Q
from ccm.table import Policy
from tests.ledger.conftest import FakeClock
from tests.ledger.helpers import CENT, row

DRIVER = Path(__file__).with_name("driver.py")
REQUESTS = 500
COVERED = 137  # the balance pays for exactly this many


async def totals(ledger: Ledger) -> dict[str, int]:
    def work() -> Op[dict[str, int]]:
        usage = yield Q("SELECT COUNT(*), COUNT(DISTINCT request_id), COALESCE(SUM(charged), 0) FROM usage")
        holds = yield Q("SELECT COUNT(*) FROM holds")
        keys = yield Q("SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(held), 0), COALESCE(SUM(settled), 0) "
                       "FROM keys")
        return {"rows": usage[0][0], "distinct": usage[0][1], "charged": int(usage[0][2]), "holds": holds[0][0],
                "balance": int(keys[0][0]), "held": int(keys[0][1]), "settled": int(keys[0][2])}

    result: dict[str, int] = await ledger.store.run(work(), write=False)
    return result


async def _burst(ledger: Ledger, key: KeyInfo, inherited: Limits = NO_LIMITS) -> list[str]:
    """`REQUESTS` concurrent requests of a cent each on `key`, each settled as soon as it is admitted."""
    outcomes: list[str] = []

    async def one(i: int) -> None:
        try:
            hold = await ledger.admit(key, f"burst-{i}", CENT, 1000, inherited=inherited)
        except (OutOfCredit, OverBudget):
            outcomes.append("refused")
            return
        await asyncio.sleep(0)
        await ledger.settle(hold, row(f"burst-{i}", key_id=key.id))
        outcomes.append("served")

    await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    return outcomes


async def test_exactly_the_covered_requests_are_admitted(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("burst", credits=COVERED * CENT))
    outcomes = await _burst(ledger, key)
    assert outcomes.count("served") == COVERED and outcomes.count("refused") == REQUESTS - COVERED
    found = await totals(ledger)
    assert found == {"rows": COVERED, "distinct": COVERED, "charged": COVERED * CENT, "holds": 0, "balance": 0,
                     "held": 0, "settled": COVERED * CENT}
    assert await ledger.audit(deep=True) == []


async def test_exactly_the_requests_a_plans_budget_covers_are_admitted(ledger: Ledger) -> None:
    """A plan's budget counts the key's settled spend from its rollups, read under the key's lock: with settles
    racing admissions (on PostgreSQL, on several connections at once), still exactly the covered ones."""
    inherited = limits_of((Policy(kind="plan", name="burst", budget=Decimal(COVERED) / 100, period="month"),))
    key, _ = await ledger.create_key(NewKey("member", plan="burst"))
    outcomes = await _burst(ledger, key, inherited)
    assert outcomes.count("served") == COVERED and outcomes.count("refused") == REQUESTS - COVERED
    found = await totals(ledger)
    assert (found["rows"], found["charged"], found["holds"], found["held"]) == (COVERED, COVERED * CENT, 0, 0)
    assert await ledger.audit(deep=True) == []


def _driver(url: str, key: str, prefix: str, count: int, concurrency: int, done: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(DRIVER), url, key, prefix, str(count), str(concurrency), str(done)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lines(done: Path) -> list[tuple[str, str]]:
    if not done.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in done.read_text().splitlines() if " " in line]  # type: ignore[misc]


async def _open(url: str) -> Ledger:
    ledger = await Ledger.open(url, clock=FakeClock(int(time.time() * 1e6)))
    await ledger.start(background=False)
    return ledger


@pytest.mark.slow
async def test_two_processes_on_one_database_admit_exactly_the_covered(database_url: str, tmp_path: Path) -> None:
    setup = await _open(database_url)
    await setup.create_key(NewKey("shared", credits=COVERED * CENT))
    await setup.stop()
    done = tmp_path / "done.txt"
    drivers = [_driver(database_url, "shared", f"p{i}", REQUESTS // 2, 25, done) for i in range(2)]
    for driver in drivers:
        _, err = await asyncio.to_thread(driver.communicate, timeout=90)
        assert driver.returncode == 0, err.decode()
    lines = _lines(done)
    assert sum(1 for kind, _ in lines if kind == "settled") == COVERED
    assert sum(1 for kind, _ in lines if kind == "refused") == REQUESTS - COVERED
    ledger = await _open(database_url)
    try:
        found = await totals(ledger)
        assert found == {"rows": COVERED, "distinct": COVERED, "charged": COVERED * CENT, "holds": 0, "balance": 0,
                         "held": 0, "settled": COVERED * CENT}
        assert await ledger.audit(deep=True) == []
    finally:
        await ledger.stop()


@pytest.mark.slow
async def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(database_url: str,
                                                                           tmp_path: Path) -> None:
    setup = await _open(database_url)
    await setup.create_key(NewKey("victim", credits=100_000 * CENT))
    await setup.stop()
    done = tmp_path / "done.txt"
    chance = random.Random(15)
    deadline = time.monotonic() + 45
    kills = 0
    while kills < 20 and time.monotonic() < deadline:
        key = "victim" if kills % 4 else "-"  # every fourth run meters the local caller (no holds)
        driver = _driver(database_url, key, f"k{kills}", 0, 8, done)
        # let it start (imports, open, register) and run a little, then kill it wherever it is
        started = time.monotonic()
        while time.monotonic() - started < 5 and len(_lines(done)) == 0 and kills == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6 + chance.random() * 0.6)
        driver.kill()
        await asyncio.to_thread(driver.wait)
        kills += 1
        # a later instance's start sweeps what the dead one held (checked at the end, and by every start between)
    assert kills >= 10, "too few kills in the time allowed"
    settled = [request for kind, request in _lines(done) if kind == "settled"]
    assert settled, "no request settled before the kills"
    ledger = await _open(database_url)
    try:
        def work() -> Op[dict[str, int]]:
            rows = yield Q("SELECT request_id, COUNT(*) FROM usage GROUP BY request_id")
            return {r[0]: r[1] for r in rows}

        stored = await ledger.store.run(work(), write=False)
        missing = [request for request in settled if request not in stored]
        assert not missing, f"{len(missing)} settles returned but have no row: {missing[:5]}"
        assert all(count == 1 for count in stored.values())
        found = await totals(ledger)
        assert found["holds"] == 0 and found["held"] == 0, found
        assert found["rows"] == found["distinct"] >= len(settled)
        assert await ledger.audit(deep=True) == []
    finally:
        await ledger.stop()
