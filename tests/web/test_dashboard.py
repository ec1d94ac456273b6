"""The key holders' dashboard at `/` over ASGI, on a real ledger (SQLite file and PostgreSQL): sign-in with a ccm key,
what the page shows, that a key holder sees only their own key, sessions ended with their key, and that the API's
paths still win over the mount at `/`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccm.ledger.money import parse_usd
from ccm.ledger.records import NewKey
from ccm.service import Service
from tests.ledger.conftest import make_database_url
from tests.web.conftest import ADMIN_KEY, ROUTES, csrf_of, environment, pages, write_routes

PRICED = ROUTES.replace("model main  = up/claude-main-1", """model main  = up/claude-main-1 {
  context    200k
  max_output 64k
  price      input 3 output 15 cache_write_5m 3.75 cache_write_1h 6 cache_read 0.3 web_search 10
}
plan small {
  models side
}""")
ASK = {"model": "claude-opus-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
NONCE = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from make_database_url(request.param, tmp_path)


async def new_key(service: Service, name: str, **options: object) -> tuple[int, str]:
    assert service.ledger is not None
    key, secret = await service.ledger.create_key(NewKey(name, **options))  # type: ignore[arg-type]
    return key.id, secret


async def ask(http: httpx.AsyncClient, secret: str, model: str = "claude-opus-5-5") -> httpx.Response:
    answer = await http.post("/v1/messages", json={**ASK, "model": model}, headers={"x-api-key": secret})
    assert answer.status_code == 200, answer.text
    return answer


async def sign_in(http: httpx.AsyncClient, secret: str) -> httpx.Response:
    form = await http.get("/signin")
    assert form.status_code == 200
    token = NONCE.search(form.text)
    assert token is not None
    return await http.post("/signin", data={"csrf": token.group(1), "key": secret, "next": "/"})


def table(html: str, table_id: str) -> str:
    start = html.index(f'id="{table_id}"')
    return html[start:html.index("</table>", start)]


async def test_a_key_signs_in_and_sees_its_balance_usage_and_models(tmp_path: Path, fake, db: str) -> None:
    path = write_routes(tmp_path, PRICED)
    env = {**environment(fake[0]), "CCM_CREDITS_CONTACT": "ops@example.com <Ops>"}
    async with pages(path, env, db=db) as (http, service):
        _, secret = await new_key(service, "alice", credits=parse_usd("5"), budget=parse_usd("2"), period="day",
                                  rpm=60, tpm=100_000)
        first = await ask(http, secret)
        await ask(http, secret, "claude-haiku-5-5")
        assert (await http.get("/")).headers["location"].startswith("/signin")
        signed = await sign_in(http, secret)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert "ccm_key=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        page = await http.get("/")
        assert page.status_code == 200
        text = page.text
        assert "alice" in text and secret not in text
        balance = re.search(r'id="balance">([^<]+)<', text)
        assert balance is not None and balance.group(1).startswith("$4.99")  # $5 less two requests' cost
        assert "of $2.00 this day" in text and "60 per minute" in text and "100,000 per minute" in text
        assert "ops@example.com &lt;Ops&gt;" in text  # who to ask, escaped
        assert 'aria-label="Requests by model, last 24 hours' in text and "Cost by model, last 30 days" in text
        recent = table(text, "recent")
        assert recent.count("<tr>") == 3 and "up/claude-side-1" in recent and "2: default" not in recent
        assert first.headers["request-id"] in recent  # each row's request id, on hover
        models = table(text, "models")
        assert "claude-main-1" in models and "200,000 tokens" in models and "input $3.00 / M tokens" in models
        assert "<code>spare</code>" in models  # every alias of the file: the key lists none


async def test_a_key_holder_sees_only_their_own_key(tmp_path: Path, fake, db: str) -> None:
    path = write_routes(tmp_path, PRICED)
    async with pages(path, environment(fake[0], ADMIN_KEY), db=db) as (http, service):
        _, alice = await new_key(service, "alice", credits=parse_usd("5"))
        bob_id, bob = await new_key(service, "bob-the-other", credits=parse_usd("7"), plan="small")
        mine = (await ask(http, alice)).headers["request-id"]
        theirs = (await ask(http, bob, "claude-haiku-5-5")).headers["request-id"]
        await sign_in(http, alice)
        for url in ("/", "/?key=bob-the-other", f"/?key_id={bob_id}", f"/?id={bob_id}", "/?name=bob-the-other",
                    "/?subject=2", f"/?request_id={theirs}"):
            page = await http.get(url)
            assert page.status_code == 200, url
            assert mine in page.text and theirs not in page.text and "bob-the-other" not in page.text, url
            assert "$7.00" not in page.text, url
        refused = await http.get("/admin/")  # a key's session is no admin session
        assert refused.status_code == 303 and "/admin/signin" in refused.headers["location"]
        async with httpx.AsyncClient(transport=http._transport, base_url=str(http.base_url)) as other:
            await sign_in(other, bob)
            page = (await other.get("/")).text
            assert theirs in page and mine not in page
            models = table(page, "models")
            assert "<code>side</code>" in models and "<code>main</code>" not in models  # the plan's list


async def test_sign_in_refuses_wrong_and_revoked_keys_and_is_throttled(tmp_path: Path, fake) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY), db=db) as (http, service):
        _, secret = await new_key(service, "gone")
        assert service.ledger is not None
        await service.ledger.revoke("gone")
        for key in ("ccm-sk-" + "x" * 43, secret, ADMIN_KEY, "", "not a key at all"):  # five failures, then a wait
            refused = await sign_in(http, key)
            assert refused.status_code == 401 and "not valid" in refused.text, key
        throttled = await sign_in(http, "ccm-sk-" + "y" * 43)
        assert throttled.status_code == 429 and "retry-after" in throttled.headers
        assert "ccm_key=" not in throttled.headers.get("set-cookie", "")
        form = await http.get("/admin/signin")  # the admin's sign-in has a throttle of its own
        nonce = NONCE.search(form.text)
        assert nonce is not None
        admin = await http.post("/admin/signin", data={"csrf": nonce.group(1), "key": ADMIN_KEY, "next": "/admin/"})
        assert admin.status_code == 303 and "ccm_admin=" in admin.headers["set-cookie"]


async def test_revoking_or_rotating_a_key_signs_its_sessions_out(tmp_path: Path, fake) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pages(write_routes(tmp_path), environment(fake[0]), db=db) as (http, service):
        _, secret = await new_key(service, "leaving")
        await sign_in(http, secret)
        assert (await http.get("/")).status_code == 200
        assert service.ledger is not None
        await service.ledger.revoke("leaving")  # elsewhere (the CLI): the next visit notices
        gone = await http.get("/")
        assert gone.status_code == 401 and "this key is revoked" in gone.text
        assert (await http.get("/")).status_code == 303  # the session is over


async def test_state_changes_need_the_csrf_token(tmp_path: Path, fake) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pages(write_routes(tmp_path), environment(fake[0]), db=db) as (http, service):
        _, secret = await new_key(service, "careful")
        await sign_in(http, secret)
        page = await http.get("/")
        refused = await http.post("/signout", data={})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert (await http.get("/")).status_code == 200  # still signed in
        done = await http.post("/signout", data={"csrf": csrf_of(page.text)})
        assert done.status_code == 303 and (await http.get("/")).status_code == 303
        forged = await http.post("/signin", data={"csrf": "forged", "key": secret})
        assert forged.status_code == 403


async def test_the_api_paths_win_over_the_mount_at_the_root(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0])) as (http, service):
        root = next(app for prefix, app in service._mounts if prefix == "/")
        for url in ("/health", "/v1/models", "/nothing-here", "/favicon.ico", "/signinx"):
            answer = await http.get(url)
            assert answer.headers["content-type"].startswith("application/json"), url
        assert (await http.get("/nothing-here")).json()["type"] == "error"
        assert root._dashboard._app is None  # nothing of the pages was built for the API's requests
        page = await http.get("/signin")
        assert page.status_code == 200 and "Your ccm key" in page.text
        assert root._dashboard._app is not None


async def test_without_a_ledger_the_dashboard_says_so(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0])) as (http, _):
        answer = await sign_in(http, "ccm-sk-" + "z" * 43)
        assert answer.status_code == 503 and "without a usage ledger (--no-ledger)" in answer.text
