"""`ccm statusline`'s line, `install_statusline` and the session endpoint's admission, on their own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ccm.claude_settings import BACKUP_SUFFIX, SettingsError, install_statusline, statusline_setting
from ccm.core.record import INBOUND, Attempt, RecentRecords, TokenUsage
from ccm.costs import PriceListCosts
from ccm.sessions import SessionsApp
from ccm.statusline import describe, router_key, router_url
from tests.test_metrics import OPUS_PRICE, record, runtime_holder


def test_the_line_of_a_served_request() -> None:
    last = {"model": "coder", "rule": "subagent", "provider": "deepseek", "upstream_model": "deepseek-chat",
            "usage": {"input_tokens": 4300, "output_tokens": 456, "cache_read_input_tokens": 8100,
                      "cache_creation_input_tokens": 0}, "status": 200, "outcome": "ok", "cost_usd": 0.0042}
    assert describe({"session_cost_usd": 1.5}, last) == (
        "ccm coder ← subagent · deepseek/deepseek-chat · 12.4k in (8.1k cached) / 456 out · $0.0042 · session $1.50")
    failed = {**last, "status": 529, "error": "overloaded_error", "usage": None, "cost_usd": None}
    assert describe({}, failed) == "ccm coder ← subagent · deepseek/deepseek-chat · error 529 overloaded_error"
    assert describe({}, {"model": 7, "usage": "x", "cost_usd": "free"}) == "ccm ?"


@pytest.mark.parametrize("base, expected", [
    ("http://127.0.0.1:4000", "http://127.0.0.1:4000"), ("http://localhost:3456/", "http://localhost:3456"),
    ("https://api.anthropic.com", "http://127.0.0.1:2260"), ("", "http://127.0.0.1:2260"),
    ("http://10.0.0.5:3456", "http://127.0.0.1:2260"),
])
def test_the_router_is_claude_codes_base_url_when_it_is_this_machine(base: str, expected: str) -> None:
    assert router_url(None, {"ANTHROPIC_BASE_URL": base}) == expected


def test_install_keeps_other_settings_and_backs_up_a_different_statusline(tmp_path: Path) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    theirs = {"type": "command", "command": "~/.claude/statusline.sh", "padding": 1}
    settings.write_text(json.dumps({"model": "opus", "permissions": {"allow": ["Bash(ls)"]}, "statusLine": theirs}))
    installed = install_statusline(settings, command="ccm-statusline")
    assert installed.change == "replaced" and installed.backup == settings.with_name("settings.json" + BACKUP_SUFFIX)
    assert json.loads(installed.backup.read_text()) == theirs
    written = json.loads(settings.read_text())
    assert written == {"model": "opus", "permissions": {"allow": ["Bash(ls)"]},
                       "statusLine": statusline_setting("ccm-statusline")}
    assert install_statusline(settings, command="ccm-statusline").change == "unchanged"
    # ccm's own earlier statusLine is replaced without a backup over the user's
    settings.write_text(json.dumps({"statusLine": {"type": "command",
                                                   "command": "/old/python -I -S /old/ccm/statusline.py"}}))
    assert install_statusline(settings, command="ccm-statusline").backup is None
    assert json.loads(installed.backup.read_text()) == theirs


def test_install_creates_the_file_and_refuses_a_broken_one(tmp_path: Path) -> None:
    fresh = tmp_path / "home" / ".claude" / "settings.json"
    assert install_statusline(fresh).change == "added"
    command = json.loads(fresh.read_text())["statusLine"]["command"]
    assert command.endswith("ccm/statusline.py") and " -I -S " in command
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": "opus",')
    with pytest.raises(SettingsError, match="not valid JSON"):
        install_statusline(broken)
    assert broken.read_text() == '{"model": "opus",'


def ask(app: SessionsApp, path: str, client: str = "127.0.0.1", **headers: str) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": path, "client": (client, 1),
             "headers": [(k.encode(), v.encode()) for k, v in {"host": "127.0.0.1:3456", **headers}.items()]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_the_session_endpoint_answers_this_machine_only_without_auth() -> None:
    recent = RecentRecords()
    usage = TokenUsage(100, 20)
    recent(record(attempts=(Attempt("anthropic", "opus", "claude-opus-5-5", 200, None, 5.0, usage=usage),),
                  usage=usage))
    app = SessionsApp(runtime_holder(), recent, PriceListCosts())
    status, body = ask(app, "/sessions/438f2556-0f1f-499d-90cb-ac5e6d7acc43")
    assert status == 200 and body["requests"] == 1 and body["last"]["model"] == "opus"
    assert body["last"]["cost_usd"] == pytest.approx((100 * 5 + 20 * 25) / 1e6)
    assert OPUS_PRICE.input == 5
    assert ask(app, "/sessions/438f2556-0f1f-499d-90cb-ac5e6d7acc43", client="10.0.0.9")[0] == 403
    assert ask(app, "/sessions/x", origin="https://evil.example")[0] == 403
    assert ask(app, "/sessions/")[0] == 400 and ask(app, "/elsewhere")[0] == 404


def test_the_admin_key_sees_every_session() -> None:
    holder = runtime_holder()
    recent = RecentRecords()
    recent(record(caller=INBOUND))
    app = SessionsApp(holder, recent, PriceListCosts(), admin_key="admin")
    status, body = ask(app, "/sessions/438f2556-0f1f-499d-90cb-ac5e6d7acc43", client="10.0.0.9",
                       **{"x-api-key": "admin"})
    assert status == 200 and body["requests"] == 1  # the admin sees every session


def test_the_key_for_the_router_is_ccms_own_header_not_the_users_anthropic_key() -> None:
    own = {"ANTHROPIC_API_KEY": "sk-ant-user", "ANTHROPIC_CUSTOM_HEADERS": "x-team: web\nx-ccm-key: inbound-1"}
    assert router_key(own) == (b"x-ccm-key", "inbound-1")
    assert router_key({"ANTHROPIC_API_KEY": "older-setup"}) == (b"x-api-key", "older-setup")
