"""Sessions, the CSRF token, the sign-in throttle, redaction and the atomic save, unit by unit."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from ccm.web.auth import MAX_SESSIONS, Sessions, Throttle, csrf_token, csrf_valid
from ccm.web.routefile import Conflict, Redaction, RouteFile, UnknownPlaceholder, redact_lines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cookie_is_signed_and_expires() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock)
    session, cookie = sessions.create("admin", "admin")
    assert sessions.find(cookie, "admin") is session
    session_id, _, signature = cookie.partition(".")
    forged = signature[:-1] + ("B" if signature.endswith("A") else "A")
    assert sessions.find(f"{session_id}.{forged}", "admin") is None
    assert sessions.find(session_id, "admin") is None
    clock.now += 9 * 3600
    assert sessions.find(cookie, "admin") is None  # idle too long


def test_sessions_are_bounded() -> None:
    sessions = Sessions()
    first = sessions.create("admin", "admin")[1]
    for _ in range(MAX_SESSIONS):
        sessions.create("admin", "admin")
    assert sessions.find(first, "admin") is None and sessions.count("admin") == MAX_SESSIONS


def test_csrf_tokens_are_bound() -> None:
    secret = os.urandom(32)
    token = csrf_token(secret, "a")
    assert csrf_valid(secret, "a", token)
    assert not csrf_valid(secret, "b", token)
    assert not csrf_valid(os.urandom(32), "a", token)
    assert not csrf_valid(secret, "a", None) and not csrf_valid(secret, "", csrf_token(secret, ""))


def test_the_throttle_per_address_and_overall() -> None:
    clock = Clock()
    throttle = Throttle(per_client=2, overall=3, window=60, clock=clock)
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") == 60 and throttle.retry_after("b") == 0
    throttle.failed("b")
    assert throttle.retry_after("c") > 0  # three failures from anywhere: everyone waits
    clock.now += 61
    assert throttle.retry_after("a") == 0 and throttle.retry_after("c") == 0


def test_redaction_round_trip() -> None:
    text = ('provider p {\n  type openai\n  url "https://x"\n  key "sk-0123456789"\n}\n'
            'settings { auth "in-123456" env("A", "dflt-secret") }\n')
    redaction = Redaction.of(text, "f.ccm")
    shown = redaction.shown(text)
    assert "sk-0123456789" not in shown and "in-123456" not in shown and "dflt-secret" not in shown
    assert redaction.restore(shown) == text
    with pytest.raises(UnknownPlaceholder):
        redaction.restore('"[redacted secret 9]"')
    broken = 'provider p {\n  key "sk-broken-0123"\n  url ('
    assert "sk-broken-0123" not in Redaction.of(broken, "f.ccm").shown(broken)
    assert redact_lines('+  key "sk-in-a-diff"\n', []) == '+  key "[redacted]"\n'


async def test_the_save_is_atomic_and_guarded_by_the_version(tmp_path: Path) -> None:
    path = tmp_path / "routes.ccm"
    path.write_text("one\n")
    os.chmod(path, 0o640)
    file = RouteFile(path)
    start = file.read()
    saved = await file.save("two\n", start.version)
    assert path.read_text() == "two\n" and (path.stat().st_mode & 0o777) == 0o640
    with pytest.raises(Conflict):
        await file.save("three\n", start.version)
    assert path.read_text() == "two\n" and saved.version != start.version


async def test_a_symlinked_route_file_stays_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "dotfiles").mkdir()
    real = tmp_path / "dotfiles" / "routes.ccm"
    real.write_text("one\n")
    link = tmp_path / "routes.ccm"
    link.symlink_to(real)
    file = RouteFile(link)
    await file.save("two\n", file.read().version)
    assert link.is_symlink() and real.read_text() == "two\n"


async def test_two_saves_from_one_version_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "routes.ccm"
    path.write_text("start\n")
    file = RouteFile(path)
    version = file.read().version
    results: list[str] = []

    async def save(text: str) -> None:
        try:
            await file.save(text, version)
            results.append("saved")
        except Conflict:
            results.append("conflict")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(save, "a\n")
        tasks.start_soon(save, "b\n")
    assert sorted(results) == ["conflict", "saved"]
