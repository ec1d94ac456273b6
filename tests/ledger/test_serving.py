"""The ledger on the request path, through a real `ccm run` and a strict fake Anthropic upstream: every request
metered (the local caller too), keys refused or held, exactly N of 500 concurrent requests served on a balance that
covers N, a cancelled stream billed what the upstream billed, the invariant holding after it all — on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccm.ledger.money import format_usd
from tests.fakes import CcmServer, FakeAnthropic, Reply, serve
from tests.fakes.ccm_server import CCM_COMMAND, REPO

UPSTREAM_KEY = "sk-ant-upstream-1"
# Only output is priced, and a request's max_tokens is the fake's answer size: a hold is then exactly the cost, so
# a balance of N answers serves exactly N (the overshoot bound is zero).
ROUTES = """\
provider anthropic {
  type anthropic
  url  env("UPSTREAM_URL")
  key  env("UPSTREAM_KEY")
}

model main = anthropic/claude-upstream {
  price input 0 output 15 cache_write_5m 0 cache_write_1h 0 cache_read 0 web_search 0
}

route {
  default -> main
}
"""
OUTPUT = 9  # what the fake answers with
ANSWER_COST = 9 * 15 / 1_000_000  # USD
BODY = {"model": "claude-sonnet-4-5", "max_tokens": OUTPUT, "messages": [{"role": "user", "content": "hi"}]}
JSON = {"content-type": "application/json", "anthropic-version": "2023-06-01"}


@pytest.fixture
def upstream() -> Iterator[tuple[str, FakeAnthropic]]:
    with serve(FakeAnthropic(UPSTREAM_KEY, default=Reply(text="hello there", output_tokens=OUTPUT))) as (url, fake):
        yield url, fake


@pytest.fixture
def ccm(upstream: tuple[str, FakeAnthropic], database_url: str, tmp_path: Path) -> Iterator[CcmServer]:
    env = {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": UPSTREAM_KEY}
    with CcmServer.from_text(tmp_path, ROUTES, env, args=("--db", database_url)) as server:
        yield server


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CCM_COMMAND, *args, "--db", db], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": "/tmp"})


def new_key(db: str, name: str, *extra: str) -> str:
    made = cli("keys", "create", name, *extra, "--format", "json", db=db)
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["secret"])


def usage_json(db: str) -> list[dict[str, object]]:
    done = cli("export", "--format", "json", db=db)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_a_local_request_is_metered_and_its_key_is_never_needed(ccm: CcmServer, database_url: str) -> None:
    answer = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers=JSON)
    assert answer.status_code == 200
    (row,) = usage_json(database_url)
    assert row["request_id"] == answer.headers["request-id"] and row["key"] == "(local)"
    assert row["output_tokens"] == OUTPUT and row["model"] == "main"


def test_a_key_out_of_credit_gets_a_402_that_says_its_balance(ccm: CcmServer, database_url: str) -> None:
    secret = new_key(database_url, "low", "--credits", "0.00001")
    answer = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": secret})
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert error["type"] == "billing_error" and "balance" in error["message"] and "ccm credits add" in error["message"]
    revoked = new_key(database_url, "gone")
    assert cli("keys", "revoke", "gone", db=database_url).returncode == 0
    refused = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": revoked})
    assert refused.status_code == 401


def test_exactly_the_requests_a_balance_covers_are_served(ccm: CcmServer, database_url: str) -> None:
    covered = 37
    secret = new_key(database_url, "burst", "--credits", f"{covered * ANSWER_COST:.6f}")

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=ccm.url, timeout=60, limits=limits) as client:
            answers = await asyncio.gather(*(client.post("/v1/messages", json=BODY,
                                                         headers={**JSON, "x-api-key": secret})
                                             for _ in range(500)))
        return [a.status_code for a in answers]

    statuses = asyncio.run(burst())
    assert statuses.count(200) == covered and statuses.count(402) == 500 - covered
    shown = json.loads(cli("keys", "show", "burst", "--format", "json", db=database_url).stdout)
    assert shown["balance"] == format_usd(0)
    keyed = [row for row in usage_json(database_url) if row["key"] == "burst"]
    assert len(keyed) == covered
    checked = cli("db", "check", db=database_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_stream_a_paying_client_leaves_is_billed_what_the_upstream_billed(
    ccm: CcmServer, database_url: str, upstream: tuple[str, FakeAnthropic]
) -> None:
    secret = new_key(database_url, "leaver", "--credits", "5")
    upstream[1].script(Reply(text="a long answer " * 40, output_tokens=333, pieces=40, chunk_delay=0.05))
    with (
        httpx.Client(base_url=ccm.url, timeout=30) as client,
        client.stream("POST", "/v1/messages", json={**BODY, "max_tokens": 1000, "stream": True},
                      headers={**JSON, "x-api-key": secret}) as answer,
    ):
        assert answer.status_code == 200
        next(answer.iter_bytes())  # the first event, then the client leaves (Esc in Claude Code)
    deadline = time.monotonic() + 20  # the row is written once the upstream's answer ended
    while not (found := [row for row in usage_json(database_url) if row["stream"]]) and time.monotonic() < deadline:
        time.sleep(0.1)
    (row,) = found
    assert row["output_tokens"] == 333  # the upstream's own final count, read on after the client left


def test_a_key_reads_its_own_balance_and_the_admin_the_reports(ccm: CcmServer, database_url: str) -> None:
    secret = new_key(database_url, "reader", "--credits", "5")
    assert httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": secret}).status_code == 200
    own = httpx.get(f"{ccm.url}/v1/key", headers={"x-api-key": secret})
    assert own.status_code == 200
    data = own.json()["data"]
    assert data["label"] == "reader" and data["limit"] == 5
    assert abs(data["usage"] - ANSWER_COST) < 1e-9 and abs(data["limit_remaining"] - (5 - ANSWER_COST)) < 1e-9
    # with no admin key set, the organization's reports are the local set-up's own (a key holder may not read them)
    assert httpx.get(f"{ccm.url}/v1/organizations/cost_report?starting_at=2026-01-01T00:00:00Z",
                     headers={"x-api-key": secret}).status_code == 403
    report = httpx.get(f"{ccm.url}/v1/organizations/usage_report/messages",
                       params={"starting_at": "2026-01-01T00:00:00Z", "bucket_width": "1d", "limit": "31"})
    assert report.status_code == 200 and "data" in report.json()
    bad = httpx.get(f"{ccm.url}/v1/organizations/usage_report/messages", params={"bucket_width": "7y"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    health = httpx.get(f"{ccm.url}/health").json()
    assert health["ledger"]["failure_policy"] == "closed" and health["ledger"]["available"] is True


def test_a_reload_that_changes_prices_does_not_change_what_a_request_in_flight_costs(
    ccm: CcmServer, database_url: str, upstream: tuple[str, FakeAnthropic]
) -> None:
    upstream[1].script(Reply(text="slow answer " * 10, output_tokens=OUTPUT, pieces=10, chunk_delay=0.1))
    with httpx.Client(base_url=ccm.url, timeout=30) as client:
        with client.stream("POST", "/v1/messages", json={**BODY, "stream": True}, headers=JSON) as answer:
            chunks = answer.iter_bytes()
            next(chunks)
            ccm.route_file.write_text(ROUTES.replace("output 15", "output 150"))
            deadline = time.monotonic() + 10
            while "reloaded" not in ccm.logs() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "reloaded" in ccm.logs()
            rest = b"".join(chunks)
        assert b"message_stop" in rest
        after = client.post("/v1/messages", json=BODY, headers=JSON)
        assert after.status_code == 200
    by_request = {row["request_id"]: row for row in usage_json(database_url)}
    (served,) = [row for row in by_request.values() if row["stream"]]
    assert float(served["charged_usd"]) == pytest.approx(ANSWER_COST)  # the price when it was routed
    assert float(by_request[after.headers["request-id"]]["charged_usd"]) == pytest.approx(ANSWER_COST * 10)


def test_a_stream_the_local_caller_leaves_is_cancelled_and_billed_an_estimate(
    ccm: CcmServer, database_url: str, upstream: tuple[str, FakeAnthropic]
) -> None:
    """Reading on costs what the upstream keeps generating: without a balance to bill, ccm hangs up at once."""
    upstream[1].script(Reply(text="a long answer " * 40, output_tokens=333, pieces=40, chunk_delay=0.05))
    with (
        httpx.Client(base_url=ccm.url, timeout=30) as client,
        client.stream("POST", "/v1/messages", json={**BODY, "max_tokens": 1000, "stream": True},
                      headers=JSON) as answer,
    ):
        next(answer.iter_bytes())
    deadline = time.monotonic() + 20
    while not (found := [row for row in usage_json(database_url) if row["stream"]]) and time.monotonic() < deadline:
        time.sleep(0.1)
    (row,) = found
    assert row["estimated"] and row["output_tokens"] < 333


BUDGET_ROUTES = ROUTES.replace("model main", """model cheap = anthropic/claude-cheap {
  price input 0 output 1 cache_write_5m 0 cache_write_1h 0 cache_read 0 web_search 0
}
model fancy = anthropic/claude-fancy {
  price input 0 output 15 cache_write_5m 0 cache_write_1h 0 cache_read 0 web_search 0
}

plan trial {
  models main cheap
  markup 50%
}

model main""").replace("  default -> main", """  budget < 70% -> cheap
  default       -> main""")


def test_a_key_that_runs_low_is_routed_to_a_cheaper_model_and_its_plan_applies(
    upstream: tuple[str, FakeAnthropic], database_url: str, tmp_path: Path
) -> None:
    env = {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": UPSTREAM_KEY}
    secret = new_key(database_url, "trialist", "--credits", f"{3 * ANSWER_COST * 1.5:.9f}", "--plan", "trial")
    with CcmServer.from_text(tmp_path, BUDGET_ROUTES, env, args=("--db", database_url)) as ccm:
        headers = {**JSON, "x-api-key": secret}
        first = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers=headers)
        second = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers=headers)
        refused = httpx.post(f"{ccm.url}/v1/messages", json={**BODY, "model": "fancy"}, headers=headers)
    assert (first.status_code, first.headers["x-ccm-model"]) == (200, "main")
    assert (second.status_code, second.headers["x-ccm-model"]) == (200, "cheap")  # two thirds of the credit left
    assert refused.status_code == 403 and "may not use model `fancy`" in refused.json()["error"]["message"]
    rows = {row["request_id"]: row for row in usage_json(database_url)}
    charged = float(rows[first.headers["request-id"]]["charged_usd"])
    assert charged == pytest.approx(ANSWER_COST * 1.5)  # the plan's markup


def test_metrics_and_the_sessions_endpoint_show_the_ledgers_money(ccm: CcmServer, database_url: str) -> None:
    """/metrics' cost is what the ledger charged (the key's markup included), its balances the keys' own; the
    statusline's endpoint answers an issued key with its own requests of the session and what the session cost it,
    the local caller with the local caller's, and nobody else's."""
    secret = new_key(database_url, "marked", "--credits", "1", "--markup", "50%")
    session = "5d2c7f0e-statusline-ledger"
    body = {**BODY, "metadata": {"user_id": json.dumps({"session_id": session})}}
    for _ in range(2):
        assert httpx.post(f"{ccm.url}/v1/messages", json=body, headers={**JSON, "x-api-key": secret}).status_code == 200
    assert httpx.post(f"{ccm.url}/v1/messages", json=body, headers=JSON).status_code == 200  # the local caller
    charged = ANSWER_COST * 1.5

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{ccm.url}/metrics").text)}
    key_id = str(json.loads(cli("keys", "show", "marked", "--format", "json", db=database_url).stdout)["id"])
    costs = {s.labels["key"]: s.value for s in families["ccm_cost_usd"].samples if s.name == "ccm_cost_usd_total"}
    assert costs[key_id] == pytest.approx(2 * charged) and costs["local"] == pytest.approx(ANSWER_COST)
    (balance,) = families["ccm_balance_usd"].samples
    assert balance.labels == {"key": key_id} and balance.value == pytest.approx(1 - 2 * charged)

    mine = httpx.get(f"{ccm.url}/ccm/sessions/{session}", headers={"x-api-key": secret}).json()
    assert mine["requests"] == 2 and mine["session_cost_usd"] == pytest.approx(2 * charged)
    assert mine["last"]["cost_usd"] == pytest.approx(charged)
    local = httpx.get(f"{ccm.url}/ccm/sessions/{session}").json()
    assert local["requests"] == 1 and local["session_cost_usd"] == pytest.approx(ANSWER_COST)
    other = new_key(database_url, "other", "--credits", "1")
    theirs = httpx.get(f"{ccm.url}/ccm/sessions/{session}", headers={"x-api-key": other}).json()
    assert theirs["requests"] == 0 and theirs["last"] is None and theirs["session_cost_usd"] is None


def test_a_ccm_key_this_router_never_issued_gets_a_401_not_the_local_callers_answer(
    ccm: CcmServer, database_url: str
) -> None:
    made = new_key(database_url, "real")
    mistyped = made[:-1] + ("A" if made[-1] != "A" else "B")
    answer = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": mistyped})
    assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
    assert "not one this router issued" in answer.json()["error"]["message"]
    assert usage_json(database_url) == []  # nothing served, nothing metered
    # a key of another kind is still the client's own (an Anthropic key, a Claude login), served as the local caller
    other = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": "sk-ant-users-own"})
    assert other.status_code == 200


def test_a_rate_limited_key_gets_anthropics_429_and_headers_and_a_bearer_key_is_one_too(
    ccm: CcmServer, database_url: str
) -> None:
    secret = new_key(database_url, "paced", "--rpm", "1")
    first = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "authorization": f"Bearer {secret}"})
    assert first.status_code == 200
    assert first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
    second = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": secret})
    assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(second.headers["retry-after"]) <= 60
    assert second.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert "anthropic-ratelimit-requests-reset" in second.headers
    (row,) = [row for row in usage_json(database_url) if row["key"] == "paced"]  # the refused one is not a row
    assert row["request_id"] == first.headers["request-id"]


PLAN_ROUTES = ROUTES.replace("model main", """model cheap = anthropic/claude-cheap {
  price input 0 output 1 cache_write_5m 0 cache_write_1h 0 cache_read 0 web_search 0
}

plan trial {
  budget $0.00027 per day   # two answers of `main`
}

team paced {
  rpm 1
}

model main""").replace("  default -> main", """  budget < 60% -> cheap
  default       -> main""")


def test_a_plans_budget_routes_refuses_and_reports_and_a_teams_rpm_limits(
    upstream: tuple[str, FakeAnthropic], database_url: str, tmp_path: Path
) -> None:
    """Keys with no limits of their own, under the route file's `plan trial { budget … }` and `team paced
    { rpm 1 }`: `budget < 60%` reads the plan's budget, admission refuses past it (402), `GET /v1/key` reports it,
    and the team's rpm answers 429 with Anthropic's headers."""
    env = {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": UPSTREAM_KEY}
    member = new_key(database_url, "member", "--plan", "trial")
    paced = new_key(database_url, "pacer", "--team", "paced")
    with CcmServer.from_text(tmp_path, PLAN_ROUTES, env, args=("--db", database_url)) as ccm:
        headers = {**JSON, "x-api-key": member}
        first = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers=headers)
        second = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers=headers)  # half the budget left
        report = httpx.get(f"{ccm.url}/v1/key", headers={"x-api-key": member}).json()["data"]
        over = httpx.post(f"{ccm.url}/v1/messages", json={**BODY, "model": "main"}, headers=headers)
        paced_first = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": paced})
        paced_second = httpx.post(f"{ccm.url}/v1/messages", json=BODY, headers={**JSON, "x-api-key": paced})
    assert (first.status_code, first.headers["x-ccm-model"]) == (200, "main")
    assert (second.status_code, second.headers["x-ccm-model"]) == (200, "cheap")
    left = 0.00027 - ANSWER_COST - OUTPUT * 1 / 1_000_000
    assert (report["limit"], report["limit_reset"]) == (0.00027, "daily")
    assert report["limit_remaining"] == pytest.approx(left)
    assert over.status_code == 402 and over.headers["x-should-retry"] == "false"
    error = over.json()["error"]
    assert error["type"] == "billing_error" and "daily budget (its plan trial's)" in error["message"]
    assert "resets at the start of the next period" in error["message"]
    assert paced_first.status_code == 200 and paced_first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert paced_second.status_code == 429 and paced_second.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(paced_second.headers["retry-after"]) <= 60
    assert paced_second.headers["anthropic-ratelimit-requests-remaining"] == "0"
