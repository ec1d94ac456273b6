"""The ledger's commands: through click's CliRunner on both stores, and through a real `ccm` process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ccm.cli.main import main
from ccm.ledger.ledger import Ledger
from ccm.usage import TokenUsage
from tests.ledger.helpers import SONNET, row


def ccm(url: str, *args: str) -> Result:
    words = list(args)
    at = words.index("--") if "--" in words else len(words)  # options go before a `--`
    return CliRunner().invoke(main, [*words[:at], "--db", url, *words[at:]], catch_exceptions=False)


def snapshot(url: str) -> list[tuple[object, ...]]:
    """Everything the ledger holds, to show a refused command wrote nothing."""
    from ccm.ledger.store.base import Q

    async def work() -> list[tuple[object, ...]]:
        ledger = await Ledger.open(url)
        try:
            def read():  # type: ignore[no-untyped-def]
                out = []
                for table in ("keys", "key_secrets", "credits", "holds", "usage", "rollup_daily"):
                    rows = yield Q(f"SELECT * FROM {table} ORDER BY 1")
                    out += [(table, *r) for r in rows]
                return out

            result: list[tuple[object, ...]] = await ledger.store.run(read(), write=False)
            return result
        finally:
            await ledger.store.close()

    return asyncio.run(work())


def test_keys_lifecycle(database_url: str) -> None:
    created = ccm(database_url, "keys", "create", "alice", "--credits", "5", "--budget", "2", "--period", "day",
                  "--models", "opus,coder", "--rpm", "60", "--tpm", "100000", "--expires", "30d", "--markup", "20%",
                  "--format", "json")
    assert created.exit_code == 0, created.output
    data = json.loads(created.stdout)
    assert data["name"] == "alice" and data["secret"].startswith("ccm-sk-") and data["balance"] == "$5.00"
    assert data["models"] == ["opus", "coder"] and data["markup"] == "20%" and data["budget"] == "$2.00"
    plain = ccm(database_url, "keys", "create", "bob")
    assert plain.exit_code == 0 and "ccm-sk-" in plain.stdout
    listed = ccm(database_url, "keys", "list")
    assert "alice" in listed.stdout and "$5.00" in listed.stdout and "$2.00/day" in listed.stdout
    added = ccm(database_url, "credits", "add", "alice", "2.50", "--note", "invoice 7")
    assert added.exit_code == 0 and "balance $7.50" in added.stdout
    shown = json.loads(ccm(database_url, "keys", "show", "alice", "--format", "json").stdout)
    assert shown["balance"] == "$7.50" and shown["credited"] == "$7.50"
    rotated = ccm(database_url, "keys", "rotate", "alice", "--grace", "1h", "--format", "json")
    assert rotated.exit_code == 0 and json.loads(rotated.stdout)["secret"] != data["secret"]
    assert ccm(database_url, "keys", "revoke", "bob").exit_code == 0
    assert "revoked" in ccm(database_url, "keys", "show", "bob").stdout
    checked = ccm(database_url, "db", "check")
    assert checked.exit_code == 0 and "balances" in checked.stdout


PLAN_ROUTES = """\
provider p {
  type openai
  url  "http://127.0.0.1:1/v1"
}
model m = p/m { max_output 8k }
plan trial {
  budget $20 per month
  rpm    60
}
team web {
  rpm 5
  tpm 400k
}
route {
  default -> m
}
"""


def test_keys_show_and_list_mark_what_comes_from_the_plan_or_team(database_url: str, tmp_path: Path) -> None:
    routes = tmp_path / "routes.ccm"
    routes.write_text(PLAN_ROUTES)
    made = ccm(database_url, "keys", "create", "member", "--plan", "trial", "--team", "web", "--rpm", "7")
    assert made.exit_code == 0
    shown = json.loads(ccm(database_url, "keys", "show", "member", "--routes", str(routes), "--format", "json").stdout)
    assert (shown["budget"], shown["period"], shown["rpm"], shown["tpm"]) == ("$20.00", "month", 7, 400_000)
    assert shown["from"] == {"budget": "plan trial", "tpm": "team web"}  # its own rpm wins over both
    text = ccm(database_url, "keys", "show", "member", "--routes", str(routes)).stdout
    assert "budget of its plan trial, tpm of its team web" in text
    listed = ccm(database_url, "keys", "list", "--routes", str(routes)).stdout
    assert "$20.00/month (plan trial) 7 rpm 400000 tpm (team web)" in listed
    broken = tmp_path / "broken.ccm"
    broken.write_text(PLAN_ROUTES.replace("per month", "per year"))
    refused = ccm(database_url, "keys", "show", "member", "--routes", str(broken))
    assert refused.exit_code == 1 and "unknown budget period `year`" in refused.stderr


@pytest.mark.parametrize("args, says", [
    (["keys", "create", "x", "--credits", "nan"], "not an amount"),
    (["keys", "create", "x", "--credits", "1e9"], "exponents"),
    (["keys", "create", "x", "--credits", "99999999999"], "too large"),
    (["keys", "create", "x", "--credits", "ten"], "not an amount"),
    (["keys", "create", "x", "--budget", "5"], "go together"),
    (["keys", "create", "x", "--budget", "0", "--period", "day"], "zero"),
    (["keys", "create", "x", "--expires", "2001-01-01"], "not in the future"),
    (["keys", "create", "x", "--expires", "someday"], "not a date"),
    (["keys", "create", "x", "--rpm", "0"], "rpm"),
    (["keys", "create", "x", "--tpm", "lots"], "tpm"),
    (["keys", "create", "x", "--markup", "20"], "markup"),
    (["keys", "create", "x", "--markup", "-5%"], "markup"),
    (["keys", "create", "x", "--models", ","], "names no model"),
    (["keys", "create", "bad name"], "not a valid key name"),
    (["keys", "create", "alice"], "already exists"),
    (["keys", "show", "nobody"], "no key named"),
    (["keys", "revoke", "nobody"], "no key named"),
    (["keys", "rotate", "alice", "--grace", "forever"], "not a duration"),
    (["keys", "rotate", "nobody"], "no key named"),
    (["credits", "add", "alice", "nan"], "not an amount"),
    (["credits", "add", "alice", "inf"], "not an amount"),
    (["credits", "add", "alice", "0"], "zero"),
    (["credits", "add", "alice", "--", "-5"], "negative"),
    (["credits", "add", "alice", "12345678901"], "too large"),
    (["credits", "add", "nobody", "5"], "no key named"),
    (["credits", "add", "free", "5"], "no credit balance"),
    (["usage", "--by", "week"], "cannot group by"),
    (["usage", "--since", "2099-01-01"], "future"),
    (["usage", "--since", "last tuesday"], "not a date"),
    (["usage", "--since", "1h", "--until", "2h"], "not before"),
    (["usage", "--key", "nobody"], "no key named"),
    (["billing", "--until", "tomorrow"], "not a date"),
    (["export", "--since", "99999d"], "before 1970"),
])
def test_bad_input_is_said_and_writes_nothing(module_database_url: str, args: list[str], says: str) -> None:
    database_url = module_database_url
    if "alice" not in ccm(database_url, "keys", "list").stdout:
        assert ccm(database_url, "keys", "create", "alice", "--credits", "5").exit_code == 0
        assert ccm(database_url, "keys", "create", "free").exit_code == 0
    before = snapshot(database_url)
    result = ccm(database_url, *args)
    assert result.exit_code == 1, result.output
    assert says in result.stderr and "error:" in result.stderr and "Traceback" not in result.output
    assert snapshot(database_url) == before


def test_unreachable_or_wrong_databases_are_said_with_the_password_hidden(tmp_path: Path) -> None:
    result = ccm("postgresql://ccm:hunter2@127.0.0.1:1/ledger", "keys", "list")
    assert result.exit_code == 1 and "postgresql://ccm:***@127.0.0.1:1/ledger" in result.stderr
    assert "hunter2" not in result.output
    assert "unknown kind of database" in ccm("mysql://a:b@h/d", "keys", "list").stderr
    assert "directory" in ccm(str(tmp_path), "keys", "list").stderr
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert ccm(str(junk), "keys", "list").exit_code == 1


def test_a_database_behind_or_ahead_is_refused_and_upgrade_brings_it_up(tmp_path: Path) -> None:
    import sqlite3

    from ccm.ledger.store import migrate

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    latest = migrate.latest("sqlite")
    upgraded = ccm(url, "db", "upgrade")
    assert upgraded.exit_code == 0 and f"schema version {latest}" in upgraded.stdout
    assert "up to date" in ccm(url, "db", "status").stdout

    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute("INSERT INTO ccm_schema_version VALUES (99, 'from_the_future', 'x')")
    ahead = ccm(url, "keys", "list")
    assert ahead.exit_code == 1 and "newer than this ccm" in ahead.stderr

    # a database made by the ccm before 0002 (the sessions' index) and 0003 (the indexes by key): refused until
    # upgraded, then served
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute("DELETE FROM ccm_schema_version WHERE version >= 2")
        conn.execute("DROP INDEX usage_session")
        conn.execute("DROP INDEX rollup_daily_key_day")
        conn.execute("DROP INDEX usage_key_ts")
        conn.execute("CREATE INDEX usage_key_ts ON usage (key_id, ts)")
    behind = ccm(url, "keys", "list")
    assert behind.exit_code == 1 and f"needs {latest}" in behind.stderr and "run `ccm db upgrade" in behind.stderr
    assert ccm(url, "db", "upgrade").exit_code == 0
    assert ccm(url, "keys", "list").exit_code == 0
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'usage_session'").fetchall()


def test_usage_billing_and_export(database_url: str, tmp_path: Path) -> None:
    assert ccm(database_url, "keys", "create", "alice", "--markup", "20%").exit_code == 0

    async def fill() -> None:
        ledger = await Ledger.open(database_url)
        try:
            key, _ = await ledger.key("alice")
            for i in range(5):
                await ledger.record(row(f"r{i}", usage=TokenUsage(input=1000, output=100, cache_write_1h=500),
                                        price=SONNET, markup=__import__("decimal").Decimal(20), key_id=key.id,
                                        model="sonnet", provider="anthropic", session="s-1", rule="default"))
            await ledger.record(row("local", usage=TokenUsage(input=10), price=SONNET, model="coder", provider="ds"))
        finally:
            await ledger.store.close()

    asyncio.run(fill())
    table = ccm(database_url, "usage", "--by", "model")
    assert table.exit_code == 0 and "sonnet" in table.stdout and "coder" in table.stdout
    as_json = json.loads(ccm(database_url, "usage", "--by", "key", "--format", "json").stdout)
    alice = next(line for line in as_json if line["key"] == "alice")
    assert alice["requests"] == 5 and alice["cache_write_1h"] == 2500
    assert alice["upstream_usd"] == "0.0375" and alice["charged_usd"] == "0.045"
    csv_text = ccm(database_url, "usage", "--by", "day", "--format", "csv", "--since", "7d").stdout
    assert csv_text.splitlines()[0].startswith("day,requests")
    bills = json.loads(ccm(database_url, "billing", "--format", "json").stdout)
    assert any(b["key"] == "alice" and b["markup_usd"] == "0.0075" for b in bills)
    exported = ccm(database_url, "export", "--key", "alice")
    lines = exported.stdout.splitlines()
    assert len(lines) == 6 and lines[0].startswith("time,request_id,key")
    assert ',"alice",' in lines[1] and ",0.007500000,0.009000000," in lines[1]
    assert lines[1][:27].endswith("Z") and lines[1][19] == "."  # 2026-05-28T12:00:00.000000Z
    out = tmp_path / "rows.json"
    assert ccm(database_url, "export", "--format", "json", "--output", str(out)).exit_code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 6 and {r["key"] for r in rows} == {"alice", "(local)"}
    jsonl = ccm(database_url, "export", "--format", "jsonl").stdout.splitlines()
    assert len(jsonl) == 6 and json.loads(jsonl[0])["request_id"]


def test_a_real_ccm_process_creates_a_key_and_reports(tmp_path: Path) -> None:
    env = {**os.environ, "CCM_DB": f"sqlite:///{tmp_path / 'ccm.db'}"}
    ccm_bin = [sys.executable, "-m", "ccm.cli.main"] if not Path(sys.executable).with_name("ccm").exists() \
        else [str(Path(sys.executable).with_name("ccm"))]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ccm_bin, *args], env=env, capture_output=True, text=True, timeout=60)

    created = run("keys", "create", "ci", "--credits", "3", "--format", "json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["secret"].startswith("ccm-sk-")
    assert run("credits", "add", "ci", "1").returncode == 0
    assert "$4.00" in run("keys", "list").stdout
    assert run("usage").returncode == 0
    assert run("db", "check").returncode == 0
    refused = run("credits", "add", "ci", "NaN")
    assert refused.returncode == 1 and "not an amount" in refused.stderr


def test_xdg_default_path(tmp_path: Path) -> None:
    from ccm.ledger.store.base import default_url

    assert default_url({"XDG_DATA_HOME": str(tmp_path)}) == f"sqlite:///{tmp_path}/ccm/ccm.db"
    assert default_url({"HOME": "/home/u"}) == "sqlite:////home/u/.local/share/ccm/ccm.db"
    assert default_url({"CCM_DB": "postgresql://x/y", "HOME": "/h"}) == "postgresql://x/y"
