"""The admin's keys pages over ASGI, on a real ledger (SQLite and PostgreSQL): create (the secret shown once, stored
hashed), top up, limits, rotate, revoke, usage per key, the CSV export; bad input refused in place, nothing written;
CSRF on every form; a key holder's session opens none of it."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccm.ledger.money import parse_usd
from ccm.ledger.store.base import Op, Q
from ccm.service import Service
from tests.ledger.conftest import make_database_url
from tests.web.conftest import ADMIN_KEY, csrf_of, environment, pages, write_routes
from tests.web.test_dashboard import PRICED, ask, new_key, sign_in

SECRET = re.compile(r'id="secret">(ccm-sk-[0-9A-Za-z]{43})<')


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from make_database_url(request.param, tmp_path)


async def token(http: httpx.AsyncClient, url: str = "/admin/keys") -> str:
    return csrf_of((await http.get(url)).text)


async def rows(service: Service, sql: str) -> list[tuple[object, ...]]:
    def work() -> Op[list[tuple[object, ...]]]:
        found = yield Q(sql)
        return list(found)

    assert service.ledger is not None
    return await service.ledger.store.run(work(), write=False)


async def create(http: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await http.post("/admin/keys", data={"csrf": await token(http), **fields})


async def test_a_key_is_created_its_secret_shown_once_and_stored_hashed(tmp_path: Path, fake, db: str) -> None:
    async with pages(write_routes(tmp_path, PRICED), environment(fake[0]), db=db) as (http, service):
        made = await create(http, name="carol", credits="12.50", budget="5", period="month", rpm="30", tpm="",
                            models="side", expires="30d", note="welcome")
        assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
        found = SECRET.search(made.text)
        assert found is not None
        secret = found.group(1)
        stored = await rows(service, "SELECT hash, prefix FROM key_secrets")
        assert stored == [(hashlib.sha256(secret.encode()).hexdigest(), secret[:13])]
        for url in ("/admin/keys", "/admin/keys/carol"):
            page = await http.get(url)
            assert page.status_code == 200 and secret not in page.text and secret[:13] in page.text
        page = (await http.get("/admin/keys/carol")).text
        assert "$12.50" in page and "of $5.00 this month" in page and "30 per minute" in page
        assert "models: side" in page
        assert (await ask(http, secret, "claude-haiku-5-5")).status_code == 200  # side: allowed
        refused = await http.post("/v1/messages", headers={"x-api-key": secret},
                                  json={"model": "claude-opus-5-5", "max_tokens": 5,
                                        "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 403  # the default rule's main is not on its list


@pytest.mark.parametrize(("fields", "says"), [
    ({"name": "bad name"}, "not a valid key name"),
    ({"name": "ok", "credits": "1e3"}, "exponents are not accepted"),
    ({"name": "ok", "credits": "NaN"}, "not an amount of money"),
    ({"name": "ok", "credits": "-5"}, "is negative"),
    ({"name": "ok", "credits": "0.0000000001"}, "more than nine decimals"),
    ({"name": "ok", "credits": "99999999"}, "too large"),
    ({"name": "ok", "budget": "5"}, "go together"),
    ({"name": "ok", "budget": "0", "period": "day"}, "is zero"),
    ({"name": "ok", "budget": "5", "period": "year"}, "not a budget period"),
    ({"name": "ok", "rpm": "0"}, "not a valid rpm"),
    ({"name": "ok", "tpm": "1.5"}, "not a valid tpm"),
    ({"name": "ok", "models": "a b"}, "not a model name"),
    ({"name": "ok", "expires": "2001-01-01"}, "not in the future"),
    ({"name": "taken"}, "already exists"),
])
async def test_bad_input_is_refused_in_place_and_writes_nothing(tmp_path: Path, fake, fields, says) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pages(write_routes(tmp_path), environment(fake[0]), db=db) as (http, service):
        await new_key(service, "taken")
        before = await rows(service, "SELECT (SELECT COUNT(*) FROM keys), (SELECT COUNT(*) FROM credits)")
        answer = await create(http, **fields)
        assert answer.status_code == 422 and says in answer.text
        assert 'role="alert"' in answer.text and "Traceback" not in answer.text
        if fields["name"] != "taken":
            assert f'value="{fields["name"]}"' in answer.text  # what was typed stays in the form
        assert await rows(service, "SELECT (SELECT COUNT(*) FROM keys), (SELECT COUNT(*) FROM credits)") == before


async def test_top_up_limits_rotate_and_revoke(tmp_path: Path, fake, db: str) -> None:
    async with pages(write_routes(tmp_path, PRICED), environment(fake[0]), db=db) as (http, service):
        _, secret = await new_key(service, "dave", credits=parse_usd("1"))
        csrf = await token(http, "/admin/keys/dave")
        topped = await http.post("/admin/keys/dave/credits", data={"csrf": csrf, "amount": "$2.25"})
        assert topped.status_code == 303 and topped.headers["location"] == "/admin/keys/dave?done=credited"
        page = (await http.get("/admin/keys/dave?done=credited")).text
        assert "Credit added." in page and 'id="balance">$3.25<' in page
        for amount in ("0", "abc", "1.5e2", ""):
            bad = await http.post("/admin/keys/dave/credits", data={"csrf": csrf, "amount": amount})
            assert bad.status_code == 422 and 'id="balance">$3.25<' in bad.text, amount
        assert "<script>" not in (await http.get("/admin/keys/dave?done=<script>")).text  # only known messages

        limited = await http.post("/admin/keys/dave/limits", data={"csrf": csrf, "budget": "4", "period": "week",
                                                                   "rpm": "", "tpm": "9000"})
        assert limited.status_code == 303
        page = (await http.get("/admin/keys/dave")).text
        assert "of $4.00 this week" in page and "9,000 per minute" in page
        bad = await http.post("/admin/keys/dave/limits", data={"csrf": csrf, "budget": "4", "period": "",
                                                               "rpm": "5"})
        assert bad.status_code == 422 and "go together" in bad.text
        assert service.ledger is not None
        key, _ = await service.ledger.key("dave")
        assert (key.budget, key.period, key.rpm, key.tpm) == (parse_usd("4"), "week", None, 9000)

        await ask(http, secret)
        async with httpx.AsyncClient(transport=http._transport, base_url=str(http.base_url)) as holder:
            await sign_in(holder, secret)
            assert (await holder.get("/")).status_code == 200
            rotated = await http.post("/admin/keys/dave/rotate", data={"csrf": csrf, "grace": "0"})
            new = SECRET.search(rotated.text)
            assert rotated.status_code == 200 and new is not None and new.group(1) != secret
            assert (await holder.get("/")).status_code == 303  # signed out by the rotation
            old = await http.post("/v1/messages", headers={"x-api-key": secret}, json={
                "model": "claude-opus-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            assert old.status_code == 401
            await ask(http, new.group(1))
            await sign_in(holder, new.group(1))
            unconfirmed = await http.post("/admin/keys/dave/revoke", data={"csrf": csrf, "confirm": "dav"})
            assert unconfirmed.status_code == 422 and (await ask(http, new.group(1))).status_code == 200
            revoked = await http.post("/admin/keys/dave/revoke", data={"csrf": csrf, "confirm": "dave"})
            assert revoked.status_code == 303
            after = await http.post("/v1/messages", headers={"x-api-key": new.group(1)}, json={
                "model": "claude-opus-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            assert after.status_code == 401 and "revoked" in after.text
            assert (await holder.get("/")).status_code == 303
        page = (await http.get("/admin/keys/dave")).text
        assert "revoked" in page and 'id="top-up"' not in page  # nothing left to manage
        assert (await http.get("/admin/keys/nobody")).status_code == 404


async def test_the_pages_show_a_plans_budget_and_a_teams_rpm_as_theirs(tmp_path: Path, fake, db: str) -> None:
    """A key with no limits of its own shows its plan's budget (spent as admission counts it) and its team's rpm,
    each marked as theirs; the limits form stays the key's own, so saving it never copies the plan's in."""
    routes = PRICED.replace("plan small {\n  models side\n}",
                            "plan small {\n  budget $3 per week\n}\nteam ops {\n  rpm 40\n}")
    async with pages(write_routes(tmp_path, routes), environment(fake[0]), db=db) as (http, service):
        _, secret = await new_key(service, "erin", plan="small", team="ops")
        await ask(http, secret)
        page = (await http.get("/admin/keys/erin")).text
        assert "of $3.00 this week" in page and "from its plan small" in page
        assert "40 per minute" in page and "(from its team ops)" in page
        assert 'id="budget" name="budget" inputmode="decimal" value=""' in page
        assert 'id="rpm" name="rpm" inputmode="numeric" value=""' in page
        spent = re.search(r'class="big">(\$[0-9.]+) <span class="muted small">of \$3.00', page)
        assert spent is not None and spent.group(1) != "$0.00"  # the request's cost, from the rollups
        listed = (await http.get("/admin/keys")).text
        assert "of $3.00 / week" in listed and "(plan small)" in listed and "40 rpm" in listed


async def test_usage_per_key_and_the_csv_export(tmp_path: Path, fake, db: str) -> None:
    async with pages(write_routes(tmp_path, PRICED), environment(fake[0]), db=db) as (http, service):
        _, erin = await new_key(service, "erin", credits=parse_usd("3"))
        _, frank = await new_key(service, "frank")
        mine = (await ask(http, erin)).headers["request-id"]
        theirs = (await ask(http, frank, "claude-haiku-5-5")).headers["request-id"]
        page = (await http.get("/admin/keys/erin")).text
        assert mine in page and theirs not in page and "Requests by model, last 24 hours" in page
        everything = await http.get("/admin/usage.csv")
        assert everything.status_code == 200 and everything.headers["content-type"].startswith("text/csv")
        assert 'filename="ccm-usage-all.csv"' in everything.headers["content-disposition"]
        lines = list(csv.DictReader(io.StringIO(everything.text)))
        assert {line["request_id"] for line in lines} == {mine, theirs}
        one = list(csv.DictReader(io.StringIO((await http.get("/admin/usage.csv?key=erin&since=1d")).text)))
        assert [(line["request_id"], line["key"]) for line in one] == [(mine, "erin")]
        assert (await http.get("/admin/usage.csv?key=nobody")).status_code == 404
        bad = await http.get("/admin/usage.csv?since=yesterday-ish")
        assert bad.status_code == 422 and "not a date or time" in bad.text


async def test_every_keys_form_needs_the_csrf_token(tmp_path: Path, fake) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pages(write_routes(tmp_path), environment(fake[0]), db=db) as (http, service):
        await new_key(service, "gina", credits=parse_usd("1"))
        for url, data in (("/admin/keys", {"name": "sneaky"}), ("/admin/keys/gina/credits", {"amount": "100"}),
                          ("/admin/keys/gina/limits", {"rpm": "1"}), ("/admin/keys/gina/rotate", {"grace": "0"}),
                          ("/admin/keys/gina/revoke", {"confirm": "gina"})):
            for csrf in ({}, {"csrf": "forged"}):
                refused = await http.post(url, data={**data, **csrf})
                assert refused.status_code == 403, url
        assert await rows(service, "SELECT name, balance, rpm, revoked_at FROM keys") == [
            ("gina", parse_usd("1"), None, None)]
        assert len(await rows(service, "SELECT hash FROM key_secrets")) == 1


async def test_a_key_holders_session_opens_none_of_the_keys_pages(tmp_path: Path, fake) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY), db=db) as (http, service):
        await new_key(service, "other")
        _, secret = await new_key(service, "holder")
        await sign_in(http, secret)
        for url in ("/admin/keys", "/admin/keys/other", "/admin/usage.csv?key=other"):
            refused = await http.get(url)
            assert refused.status_code == 303 and "/admin/signin" in refused.headers["location"], url
        csrf = csrf_of((await http.get("/")).text)  # the dashboard's token is no admin token
        refused = await http.post("/admin/keys", data={"csrf": csrf, "name": "made-by-a-holder"})
        assert refused.status_code == 303 and "/admin/signin" in refused.headers["location"]
        assert await rows(service, "SELECT COUNT(*) FROM keys") == [(2,)]


async def test_the_list_pages_by_name_and_finds_by_name(tmp_path: Path, fake, db: str) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0]), db=db) as (http, service):
        for number in range(105):
            await new_key(service, f"team_{number:03d}")
        await new_key(service, "teamz000")
        first = (await http.get("/admin/keys")).text
        names = re.findall(r'href="/admin/keys/([^"]+)"', first)
        assert len(names) == 100 and names[0] == "team_000" and names[-1] == "team_099"
        following = re.search(r'href="(/admin/keys\?after=[^"]+)" id="next-page"', first)
        assert following is not None
        rest = re.findall(r'href="/admin/keys/([^"]+)"', (await http.get(following.group(1))).text)
        assert rest == [f"team_{n:03d}" for n in range(100, 105)] + ["teamz000"]
        found = re.findall(r'href="/admin/keys/([^"]+)"', (await http.get("/admin/keys?q=M_10")).text)
        assert found == [f"team_{n:03d}" for n in range(100, 105)]  # any case; `_` is itself, not a wildcard
        assert re.findall(r'href="/admin/keys/([^"]+)"', (await http.get("/admin/keys?q=%25")).text) == []
