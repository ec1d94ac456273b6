"""`LedgerMetering` with its database gone (a SQLite store closed under it): what each caller gets, policy by policy,
decided without a server in front (tests/ledger/test_serving_outage.py proves the same through a real `ccm run`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ccm.core.record import Caller
from ccm.errors import ApiError
from ccm.ledger.journal import Journal
from ccm.ledger.ledger import Ledger
from ccm.ledger.money import NANOS_PER_USD
from ccm.ledger.records import NewKey
from ccm.metering import FailurePolicy, LedgerMetering


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    await opened.start(background=False)
    yield opened
    await opened.store.close()


async def metering(ledger: Ledger, tmp_path: Path, policy: FailurePolicy) -> LedgerMetering:
    return LedgerMetering(ledger, await Journal.open(tmp_path / "journal", ledger), policy_of=lambda: policy)


def assert_unavailable(error: ApiError) -> None:
    assert error.status == 503 and error.error_type == "api_error"
    assert ("x-should-retry", "true") in error.headers


async def test_fail_open_serves_a_key_it_has_seen_with_nothing_to_check_and_refuses_the_rest(
    ledger: Ledger, tmp_path: Path
) -> None:
    _, free = await ledger.create_key(NewKey("free"))
    _, paid = await ledger.create_key(NewKey("paid", credits=NANOS_PER_USD))
    _, stranger = await ledger.create_key(NewKey("stranger"))
    meter = await metering(ledger, tmp_path, "open")
    assert await meter.identify(free) is not None and await meter.identify(paid) is not None
    await ledger.store.close()  # the database is gone

    caller = await meter.identify(free)
    assert caller is not None and caller.name == "free"
    for refused in (paid, stranger):  # a balance to check; a key never seen (a forged one looks the same)
        with pytest.raises(ApiError) as raised:
            await meter.identify(refused)
        assert_unavailable(raised.value)
    assert meter.health()["available"] is False


async def test_fail_closed_refuses_every_key_once_the_database_is_gone(ledger: Ledger, tmp_path: Path) -> None:
    _, free = await ledger.create_key(NewKey("free"))
    meter = await metering(ledger, tmp_path, "closed")
    assert await meter.identify(free) is not None
    await ledger.store.close()
    with pytest.raises(ApiError) as raised:
        await meter.identify(free)
    assert_unavailable(raised.value)


async def test_a_rule_that_reads_a_keys_spend_gets_503_not_a_crash_without_the_database(
    ledger: Ledger, tmp_path: Path
) -> None:
    _, free = await ledger.create_key(NewKey("free"))
    meter = await metering(ledger, tmp_path, "open")
    caller = await meter.identify(free)
    assert isinstance(caller, Caller)
    await ledger.store.close()
    with pytest.raises(ApiError) as raised:
        await meter.standing(caller)
    assert_unavailable(raised.value)
