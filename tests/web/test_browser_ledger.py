"""The dashboard and the admin's keys pages in a real browser (Debian's chromium through Playwright, as
test_browser.py), against the real service under hypercorn with a SQLite ledger: an admin creates a key and sees its
secret once, the key signs in to `/` and sees its balance, a top-up changes it, a revocation makes the key's next
request 401; requests without the CSRF token are refused; axe-core finds no serious or critical violation on the new
pages at either width; screenshots go to $CCM_SCREENSHOTS (docs/ui) like the admin page's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from ccm.ledger.ledger import opened
from ccm.ledger.records import NewKey
from ccm.ledger.times import DAY, HOUR, now
from ccm.usage import TokenUsage
from tests.ledger.helpers import SONNET, row
from tests.web.conftest import Served, environment, served, write_routes
from tests.web.test_browser import AXE, DESKTOP, PHONE, _axe, new_page
from tests.web.test_dashboard import PRICED

pytestmark = pytest.mark.slow

ASK = {"model": "claude-opus-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def site(tmp_path: Path, fake) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    env = {**environment(fake[0]), "CCM_CREDITS_CONTACT": "ops@example.com"}
    with served(write_routes(tmp_path, PRICED), env, db=f"sqlite:///{tmp_path / 'ledger.db'}") as server:
        yield server


def ask(url: str, secret: str, model: str = "claude-opus-5-5") -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", json={**ASK, "model": model}, headers={"x-api-key": secret}, timeout=10)


def balance(page) -> str:  # type: ignore[no-untyped-def]
    return str(page.inner_text("#balance")).strip()


def test_a_key_is_created_signs_in_sees_its_balance_is_topped_up_and_revoked(browser, site) -> None:  # type: ignore[no-untyped-def]
    admin = new_page(browser)
    admin.goto(f"{site.url}/admin/keys")
    admin.fill("#name", "hana")
    admin.fill("#credits", "2.50")
    admin.fill("#rpm", "60")
    admin.click("#create-key button[type=submit]")
    secret = admin.inner_text("#secret").strip()
    assert re.fullmatch(r"ccm-sk-[0-9A-Za-z]{43}", secret)
    assert "shown only this once" in admin.inner_text("main")
    admin.click("text=To the key's page")
    assert secret not in admin.content()  # never again
    assert balance(admin) == "$2.50"

    assert ask(site.url, secret).status_code == 200
    holder = new_page(browser)
    holder.goto(f"{site.url}/")
    assert holder.url.endswith("/signin?next=/")
    holder.fill("#key", secret)
    holder.click("button[type=submit]")
    holder.wait_for_url(f"{site.url}/")
    spent = balance(holder)
    assert spent.startswith("$2.49") and "60 per minute" in holder.inner_text("main")
    assert holder.query_selector("#recent tbody tr:has-text('main')") is not None
    assert "ops@example.com" in holder.inner_text("#more-credits")

    admin.fill("#amount", "1.25")
    admin.click("#top-up button[type=submit]")
    admin.wait_for_selector("#done")
    holder.reload()
    assert Decimal(balance(holder).lstrip("$")) == Decimal(spent.lstrip("$")) + Decimal("1.25")

    admin.fill("#confirm", "hana")
    admin.click("#revoke button[type=submit]")
    admin.wait_for_selector("#done:has-text('revoked')")
    refused = ask(site.url, secret)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    holder.reload()
    assert "/signin" in holder.url  # signed out with its key


def test_requests_without_the_csrf_token_are_refused(browser, site) -> None:  # type: ignore[no-untyped-def]
    admin = new_page(browser)
    admin.goto(f"{site.url}/admin/keys")
    refused = admin.request.post(f"{site.url}/admin/keys", form={"name": "no-token"})
    assert refused.status == 403
    admin.reload()
    assert "no-token" not in admin.inner_text("#keys")
    admin.fill("#name", "ivy")
    admin.click("#create-key button[type=submit]")
    secret = admin.inner_text("#secret").strip()
    holder = new_page(browser)
    holder.goto(f"{site.url}/signin")
    holder.fill("#key", secret)
    holder.click("button[type=submit]")
    holder.wait_for_url(f"{site.url}/")
    assert holder.request.post(f"{site.url}/signout", form={}).status == 403
    holder.reload()
    assert holder.url == f"{site.url}/"  # still signed in
    assert holder.request.post(f"{site.url}/admin/keys/ivy/revoke", form={"confirm": "ivy"}).status == 403


def _seed(url: str) -> str:
    """A key with a month of varied traffic (written straight to the ledger, as requests would have), for the
    pictures and the accessibility check of pages with data."""

    async def work() -> str:
        async with opened(url) as ledger:
            key, secret = await ledger.create_key(NewKey("jules", credits=50_000_000_000, budget=20_000_000_000,
                                                         period="month", rpm=120, tpm=400_000))
            at = now()
            models = (("main", "up", "claude-main-1"), ("side", "up", "claude-side-1"))
            times = [at - h * HOUR - 600 for h in range(0, 24, 1) for _ in range(1 + h % 3)]
            times += [at - d * DAY - 3600 for d in range(1, 30) for _ in range(2 + d % 5)]
            for number, when in enumerate(times):
                model, provider, upstream = models[number % 3 == 0]
                usage = TokenUsage(input=40 + number % 90, output=300 + 17 * (number % 40), cache_write_5m=900,
                                   cache_read=12_000 + 500 * (number % 20))
                await ledger.record(row(f"req-{number}", key_id=key.id, usage=usage, price=SONNET, model=model,
                                        provider=provider, upstream_model=upstream, rule="default", time=when,
                                        latency_ms=400 + number % 700, status=200 if number % 17 else 529,
                                        error=None if number % 17 else "overloaded_error"))
            return secret

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's loop
        return thread.submit(asyncio.run, work()).result()


def test_the_new_pages_are_accessible_and_readable_at_both_widths(browser, site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert AXE.is_file(), f"{AXE} is missing: run scripts/install-browser-tools.sh (make test does)"
    shots = Path(os.environ.get("CCM_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    secret = _seed(f"sqlite:///{tmp_path / 'ledger.db'}")  # the site's ledger
    problems: dict[str, object] = {}
    signin = new_page(browser)
    signin.goto(f"{site.url}/signin")
    if found := _axe(signin):
        problems["dashboard sign-in"] = found
    signin.screenshot(path=str(shots / "dashboard-signin-desktop.png"))
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        admin = new_page(browser, viewport)
        holder = new_page(browser, viewport)
        holder.goto(f"{site.url}/signin")
        holder.fill("#key", secret)
        holder.click("button[type=submit]")
        holder.wait_for_url(f"{site.url}/")
        pages = {"dashboard": (holder, f"{site.url}/"), "keys": (admin, f"{site.url}/admin/keys"),
                 "key": (admin, f"{site.url}/admin/keys/jules")}
        for name, (page, url) in pages.items():
            page.goto(url)
            page.wait_for_load_state("load")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"] + 1, f"{name} scrolls sideways at {viewport['width']} px"
            if found := _axe(page):
                problems[f"{name} ({label})"] = found
            page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
        admin.goto(f"{site.url}/admin/keys")
        admin.fill("#name", f"shown-once-{label}")
        admin.click("#create-key button[type=submit]")
        admin.wait_for_selector("#secret")
        if found := _axe(admin):
            problems[f"secret ({label})"] = found
        admin.context.close()
        holder.context.close()
    assert not problems, problems
