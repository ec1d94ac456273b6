"""Money, times and key values as people type them: what is accepted, and the clear refusals."""

from __future__ import annotations

import pytest

from ccm.ledger.errors import BadAmount, BadInput, BadTime
from ccm.ledger.keys import check_name, looks_like_secret, new_secret, parse_limit, parse_models, secret_hash
from ccm.ledger.money import MAX_AMOUNT, cents, format_usd, parse_usd
from ccm.ledger.store.base import redact, sqlite_path
from ccm.ledger.times import (
    DAY,
    HOUR,
    from_datetime,
    iso,
    parse_duration,
    parse_future,
    parse_instant,
    period_end,
    period_start,
)
from tests.ledger.conftest import FakeClock


@pytest.mark.parametrize("text, nanos", [
    ("12", 12_000_000_000), ("12.5", 12_500_000_000), ("$0.25", 250_000_000), ("1,000.50", 1_000_500_000_000),
    ("0.000000001", 1), (" 3 ", 3_000_000_000), ("0", 0), ("10000000", MAX_AMOUNT),
])
def test_amounts_accepted(text: str, nanos: int) -> None:
    assert parse_usd(text) == nanos


@pytest.mark.parametrize("text, says", [
    ("nan", "not an amount"), ("NaN", "not an amount"), ("inf", "not an amount"), ("-inf", "not an amount"),
    ("1e3", "exponents"), ("1E-2", "exponents"), ("-5", "negative"), ("", "not an amount"), ("abc", "not an amount"),
    ("12.5.1", "not an amount"), ("1,00", "not an amount"), ("0x10", "not an amount"),
    ("1.0000000001", "nine decimals"), ("10000000.01", "too large"), ("99999999999999999999", "too large"),
])
def test_amounts_refused(text: str, says: str) -> None:
    with pytest.raises(BadAmount) as refused:
        parse_usd(text)
    assert says in refused.value.message
    assert isinstance(refused.value, BadInput)


def test_zero_refused_where_it_makes_no_sense() -> None:
    with pytest.raises(BadAmount):
        parse_usd("0", allow_zero=False)
    assert parse_usd("-2", allow_negative=True) == -2_000_000_000


def test_format_and_cents() -> None:
    assert format_usd(12_345_678_000) == "$12.345678"
    assert format_usd(0) == "$0.00" and format_usd(1) == "$0.000000001" and format_usd(-1_500_000_000) == "-$1.50"
    assert cents(1_000_000_000) == "100" and cents(12_345) == "0.0012345" and cents(0) == "0"


def test_instants(clock: FakeClock) -> None:
    assert parse_instant("7d", clock) == clock() - 7 * DAY
    assert parse_instant("24h", clock) == clock() - DAY
    assert parse_instant("2026-05-01", clock) == from_datetime(__import__("datetime").datetime(2026, 5, 1))
    assert parse_instant("2026-05-01T12:00:00Z", clock) == parse_instant("2026-05-01T14:00:00+02:00", clock)
    for bad in ("yesterday", "7 days", "2026-13-01", "2026-05-01T25:00", "", "1e9", "99999d"):
        with pytest.raises(BadTime):
            parse_instant(bad, clock)
    with pytest.raises(BadTime, match="future"):
        parse_instant("2099-01-01", clock)
    with pytest.raises(BadTime, match="not in the future"):
        parse_future("2001-01-01", clock)
    assert parse_future("30d", clock) == clock() + 30 * DAY
    assert parse_duration("1h") == HOUR and parse_duration("0") == 0
    for bad in ("1 hour", "-1h", "h", "1.5h"):
        with pytest.raises(BadTime):
            parse_duration(bad)


def test_periods_are_utc_calendar_periods() -> None:
    import datetime as dt

    wednesday = from_datetime(dt.datetime(2026, 5, 27, 15, 30))
    assert iso(period_start("day", wednesday)) == "2026-05-27T00:00:00Z"
    assert iso(period_start("week", wednesday)) == "2026-05-25T00:00:00Z"  # Monday
    assert iso(period_start("month", wednesday)) == "2026-05-01T00:00:00Z"
    assert iso(period_end("month", wednesday)) == "2026-06-01T00:00:00Z"
    assert iso(period_end("month", from_datetime(dt.datetime(2026, 12, 31, 23)))) == "2027-01-01T00:00:00Z"
    assert iso(period_end("week", wednesday)) == "2026-06-01T00:00:00Z"


def test_secrets_and_names() -> None:
    secret = new_secret()
    assert looks_like_secret(secret) and not looks_like_secret(secret + "x") and not looks_like_secret("sk-ant-x")
    assert len({new_secret() for _ in range(100)}) == 100
    assert len(secret_hash(secret)) == 64 and secret not in secret_hash(secret)
    assert check_name("alice-2.dev") == "alice-2.dev"
    for bad in ("", "-x", "a b", "x" * 65, "ünï", "a;drop"):
        with pytest.raises(BadInput):
            check_name(bad)
    assert parse_models("opus, coder,opus") == ("opus", "coder")
    for bad in (",", "a b", "x;y"):
        with pytest.raises(BadInput):
            parse_models(bad)
    assert parse_limit("60", "rpm") == 60
    for bad in ("0", "-1", "1.5", "many", "1e3"):
        with pytest.raises(BadInput):
            parse_limit(bad, "rpm")


def test_urls_hide_passwords() -> None:
    assert redact("postgresql://ccm:s3cret@db.example:5432/ledger") == "postgresql://ccm:***@db.example:5432/ledger"
    assert redact("postgresql://db/ledger") == "postgresql://db/ledger"
    assert sqlite_path("sqlite:///tmp/x.db") is not None and str(sqlite_path("sqlite:///tmp/x.db")) == "/tmp/x.db"
    assert sqlite_path("postgresql://x/y") is None
    with pytest.raises(BadInput):
        sqlite_path("sqlite:///:memory:")
