"""Time in the ledger: integer microseconds since the epoch, UTC, everywhere (columns, arithmetic, periods).

Budget periods are calendar periods in UTC: a day from midnight, a week from Monday midnight, a month from the 1st
(what OpenRouter and Anthropic's gateway do). The readers here turn what a person types into instants, with clear
errors: `2026-05-01`, `2026-05-01T12:00`, `2026-05-01T12:00:00+02:00`, or `7d`, `24h`, `30m` ago.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias, get_args

from ccm.ledger.errors import BadTime

Micros: TypeAlias = int
Clock: TypeAlias = Callable[[], Micros]
Period = Literal["day", "week", "month"]
PERIODS: tuple[str, ...] = get_args(Period)

SECOND: Micros = 1_000_000
MINUTE: Micros = 60 * SECOND
HOUR: Micros = 60 * MINUTE
DAY: Micros = 24 * HOUR


def now() -> Micros:
    return time.time_ns() // 1000


def to_datetime(at: Micros) -> datetime:
    return datetime.fromtimestamp(at / SECOND, UTC) if at % SECOND else datetime.fromtimestamp(at // SECOND, UTC)


def from_datetime(moment: datetime) -> Micros:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * SECOND + delta.microseconds


def iso(at: Micros) -> str:
    """RFC 3339 in UTC with a `Z`, seconds precision unless there is more (what Anthropic's Admin API writes)."""
    moment = to_datetime(at)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def period_start(period: Period, at: Micros) -> Micros:
    moment = to_datetime(at)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return from_datetime(day)
    if period == "week":
        return from_datetime(day - timedelta(days=day.weekday()))
    return from_datetime(day.replace(day=1))


def period_end(period: Period, at: Micros) -> Micros:
    start = to_datetime(period_start(period, at))
    if period == "day":
        return from_datetime(start + timedelta(days=1))
    if period == "week":
        return from_datetime(start + timedelta(days=7))
    return from_datetime(start.replace(year=start.year + 1, month=1) if start.month == 12
                         else start.replace(month=start.month + 1))


def day_number(at: Micros) -> int:
    """Days since the epoch (the rollups' key)."""
    return at // DAY


_RELATIVE = re.compile(r"([0-9]{1,6})(m|h|d|w)")
_UNITS = {"m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_HINT = "write an ISO date or time (2026-05-01, 2026-05-01T12:00, 2026-05-01T12:00:00Z) or a time ago: 30m, 24h, 7d"


def parse_instant(text: str, clock: Clock = now) -> Micros:
    """A past or present instant: ISO 8601 (a date alone is its midnight UTC; no zone is UTC), or `7d`/`24h`/`30m`/`2w`
    before now. Future instants are refused: a report that starts tomorrow is a typing mistake."""
    raw = text.strip()
    current = clock()
    relative = _RELATIVE.fullmatch(raw)
    at = current - int(relative.group(1)) * _UNITS[relative.group(2)] if relative else _parse_iso(raw)
    if at > current:
        raise BadTime(f"`{text}` is in the future", "give a time in the past, or a time ago: 7d, 24h")
    if at < 0:
        raise BadTime(f"`{text}` is before 1970", _HINT)
    return at


def parse_future(text: str, clock: Clock = now) -> Micros:
    """An instant after now (an expiry): ISO 8601, or `30d`/`12h` from now. Past instants are refused."""
    raw = text.strip()
    current = clock()
    relative = _RELATIVE.fullmatch(raw)
    at = current + int(relative.group(1)) * _UNITS[relative.group(2)] if relative else _parse_iso(raw)
    if at <= current:
        raise BadTime(f"`{text}` is not in the future", "give a date after today, e.g. 2030-01-01, or 30d from now")
    return at


def parse_duration(text: str) -> Micros:
    """`0`, `90s`, `30m`, `1h`, `7d`: a length of time (rotation grace periods)."""
    raw = text.strip()
    if raw == "0":
        return 0
    found = re.fullmatch(r"([0-9]{1,6})(s|m|h|d|w)", raw)
    if not found:
        raise BadTime(f"`{text}` is not a duration", "write a number and a unit: 90s, 30m, 1h, 7d (or 0)")
    unit = SECOND if found.group(2) == "s" else _UNITS[found.group(2)]
    return int(found.group(1)) * unit


def _parse_iso(raw: str) -> Micros:
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise BadTime(f"`{raw}` is not a date or time", _HINT) from None
    if not 1970 <= moment.year <= 9999 or len(raw) < 10:
        raise BadTime(f"`{raw}` is not a date or time", _HINT)
    return from_datetime(moment)
