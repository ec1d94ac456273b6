"""The admin page in a real browser: Debian's chromium (/usr/bin/chromium), headless, driven by Playwright for
Python — never a browser Playwright downloads. `make test` installs chromium and axe-core
(scripts/install-browser-tools.sh). The server is the real service under hypercorn on 127.0.0.1, its watcher
reloading on save, in front of FakeAnthropic.

Screenshots of every page, at 1280x800 and at phone width, go to $CCM_SCREENSHOTS when it is set (`make
screenshots` sets it to docs/ui), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import ADMIN_KEY, ROUTES, UPSTREAM_KEY, environment, served, write_routes

pytestmark = pytest.mark.slow

AXE_VERSION = os.environ.get("AXE_CORE_VERSION", "4.14.1")
AXE = Path(os.environ.get("CCM_CACHE") or Path.home() / ".cache" / "ccm") / f"axe-core-{AXE_VERSION}" / \
    "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PAGES = {"overview": "/admin/", "routes": "/admin/routes", "editor": "/admin/editor", "history": "/admin/history"}


@pytest.fixture
def site(tmp_path: Path, fake):  # type: ignore[no-untyped-def]
    with served(write_routes(tmp_path), environment(fake[0])) as server:
        yield server


def new_page(browser, viewport=DESKTOP):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(10_000)
    return page


def set_caret_after(page, needle: str) -> None:  # type: ignore[no-untyped-def]
    page.eval_on_selector("#source", """(area, needle) => {
        const at = area.value.indexOf(needle) + needle.length;
        area.focus(); area.setSelectionRange(at, at);
    }""", needle)


def select_text(page, needle: str) -> None:  # type: ignore[no-untyped-def]
    page.eval_on_selector("#source", """(area, needle) => {
        const at = area.value.indexOf(needle);
        area.focus(); area.setSelectionRange(at, at + needle.length);
    }""", needle)


def ask(url: str, model: str = "claude-opus-5-5") -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", json={"model": model, "max_tokens": 10,
                                                  "messages": [{"role": "user", "content": "hi"}]}, timeout=10)


def test_sign_in_with_the_admin_key(browser, tmp_path: Path, fake) -> None:  # type: ignore[no-untyped-def]
    with served(write_routes(tmp_path), environment(fake[0], ADMIN_KEY)) as server:
        page = new_page(browser)
        page.goto(f"{server.url}/admin/routes")
        assert "/admin/signin" in page.url
        page.fill("#key", "not-the-key")
        page.click("button[type=submit]")
        assert "not valid" in page.inner_text("[role=alert]")
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.url}/admin/routes")
        assert page.inner_text("h1") == "Routes"
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["ccm_admin"]["httpOnly"] and cookies["ccm_admin"]["sameSite"] == "Strict"
        assert ADMIN_KEY not in page.content()
        page.click("text=Sign out")
        page.wait_for_url(re.compile(r".*/admin/signin$"))
        page.goto(f"{server.url}/admin/")
        assert "/admin/signin" in page.url


def test_a_typo_is_shown_inline_and_cannot_be_saved_then_the_fix_routes_traffic(browser, site, fake) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    page.goto(f"{site.url}/admin/editor")
    page.wait_for_selector("#check-summary.ok-box")
    set_caret_after(page, "default    -> m")
    page.keyboard.type("x")  # main -> mxain
    diagnostic = page.wait_for_selector("#diagnostics li.error")
    assert "unknown model `mxain`" in diagnostic.inner_text()
    assert page.inner_text("#highlight .diag-error") == "mxain"
    page.click("#review-button")
    page.wait_for_selector("#diff .add")
    assert page.is_disabled("#save-button")
    # the server refuses it too, not only the page
    token = page.get_attribute("body", "data-csrf")
    version = page.get_attribute("#editor-form", "data-version")
    refused = page.request.put(f"{site.url}/admin/api/file", data={"text": page.input_value("#source")},
                               headers={"x-csrf-token": token, "if-match": f'"{version}"'})
    assert refused.status == 422
    assert site.path.read_text() == ROUTES
    # fix it: the default rule now goes to `side`
    select_text(page, "mxain")
    page.keyboard.type("side")
    page.wait_for_selector("#check-summary.ok-box")
    assert page.query_selector("#highlight .diag-error") is None
    page.click("#review-button")
    page.wait_for_selector("#diff .add")
    assert "-> side" in page.inner_text("#diff")
    page.click("#save-button")
    page.wait_for_selector("#save-status:has-text('Saved and reloaded')")
    assert "rules ~#3" in page.inner_text("#save-status")
    assert "default    -> side" in site.path.read_text()
    answer = ask(site.url)
    assert answer.status_code == 200 and fake[1].message_requests()[-1].json["model"] == "claude-side-1"
    page.goto(f"{site.url}/admin/history")
    assert "admin page" in page.inner_text("table")


def test_two_admins_the_second_gets_a_conflict_not_a_lost_edit(browser, site) -> None:  # type: ignore[no-untyped-def]
    first, second = new_page(browser), new_page(browser)
    for page in (first, second):
        page.goto(f"{site.url}/admin/editor")
        page.wait_for_selector("#check-summary.ok-box")
    set_caret_after(first, "# The admin page's test routes.")
    first.keyboard.type(" First admin.")
    set_caret_after(second, "# cheap work")
    second.keyboard.type(", said the second admin")
    for page in (first, second):
        page.wait_for_timeout(400)
        page.wait_for_selector("#check-summary.ok-box")
    first.click("#review-button")
    first.wait_for_selector("#save-button:not([disabled])")
    first.click("#save-button")
    first.wait_for_selector("#save-status:has-text('Saved')")
    second.click("#review-button")
    second.wait_for_selector("#save-button:not([disabled])")
    second.click("#save-button")
    second.wait_for_selector("#save-status:has-text('Conflict')")
    assert "said the second admin" in second.input_value("#source")  # nothing lost
    on_disk = site.path.read_text()
    assert "First admin." in on_disk and "said the second admin" not in on_disk
    assert "First admin." in second.inner_text("#diff")  # what changed under them


def test_test_provider_against_the_fake_upstream(browser, site, fake) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    page.goto(f"{site.url}/admin/")
    page.click("button[aria-label='Test provider up']")
    page.wait_for_selector("#probe-result.ok-box")
    result = page.inner_text("#probe-result")
    assert "ok, status 200" in result and "claude-main-1" in result
    assert fake[1].message_requests()[-1].json["max_tokens"] == 1
    page.click("button[aria-label='Test provider down']")
    page.wait_for_selector("#probe-result.problem")
    assert "failed" in page.inner_text("#probe-result")
    assert UPSTREAM_KEY not in page.content()


def test_the_live_feed_shows_requests_as_they_finish(browser, site) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    page.goto(f"{site.url}/admin/")
    assert ask(site.url, "claude-haiku-5-5").status_code == 200
    row = page.wait_for_selector("#feed tbody tr:has-text('claude-haiku-5-5')")
    assert "side" not in "" and "up/claude-side-1" in row.inner_text()


HOSTILE = """\
# <script>window.__xss = 1</script> "><img src=x onerror="window.__xss=2"> {{7*7}} {% raw %}
provider up {
  type anthropic
  url  env("UP_URL")
  key  env("UP_KEY")
  headers { "X-Title" = "</textarea><img src=x onerror=window.__xss=3>" }
}
model main = up/claude-main-1 # </script><script>window.__xss=4</script>
route {
  model ~ "<img src=x onerror=window.__xss=5>*" -> main
  header "x" == "\\"><svg onload=window.__xss=6>" -> main
  default -> main
}
test "<img src=x onerror=window.__xss=7> {{7*7}}" {
  request { model: "</script><b>bold</b>" }
  expect  main
}
"""


def test_hostile_route_file_text_stays_inert(browser, tmp_path: Path, fake) -> None:  # type: ignore[no-untyped-def]
    with served(write_routes(tmp_path, HOSTILE), environment(fake[0])) as server:
        ask(server.url, "<img src=x onerror=window.__xss=8>")
        page = new_page(browser)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        for path in PAGES.values():
            page.goto(f"{server.url}{path}")
            page.wait_for_load_state("load")
            assert page.evaluate("window.__xss") is None, path
            assert page.query_selector("main img, main svg:not(.chart), main b") is None, path
        page.goto(f"{server.url}/admin/editor")
        assert "{{7*7}}" in page.input_value("#source") and "</textarea><img" in page.input_value("#source")
        assert page.query_selector("#highlight img") is None
        page.goto(f"{server.url}/admin/routes")
        assert '<img src=x onerror=window.__xss=5>' in page.inner_text("main")
        page.goto(f"{server.url}/admin/")
        page.wait_for_selector("#feed tbody tr:has-text('onerror=window.__xss=8')")
        assert page.evaluate("window.__xss") is None and not dialogs


def test_a_request_without_the_csrf_token_is_refused(browser, site) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    page.goto(f"{site.url}/admin/editor")
    token = page.get_attribute("body", "data-csrf")
    without = page.request.post(f"{site.url}/admin/api/check", data={"text": ROUTES})
    assert without.status == 403
    form = page.request.post(f"{site.url}/admin/save", form={"text": "x", "version": "y"})
    assert form.status == 403
    assert site.path.read_text() == ROUTES
    ok = page.request.post(f"{site.url}/admin/api/check", data={"text": ROUTES}, headers={"x-csrf-token": token})
    assert ok.status == 200 and ok.json()["ok"] is True


def _axe(page) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    page.evaluate(AXE.read_text())
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def test_every_page_is_accessible_and_readable_at_both_widths(browser, site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert AXE.is_file(), f"{AXE} is missing: run scripts/install-browser-tools.sh (make test does)"
    shots = Path(os.environ.get("CCM_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    ask(site.url)
    ask(site.url, "claude-haiku-5-5")
    problems: dict[str, list[dict[str, object]]] = {}
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = new_page(browser, viewport)
        for name, path in PAGES.items():
            page.goto(f"{site.url}{path}")
            page.wait_for_load_state("load")
            if name == "editor":
                page.wait_for_selector("#check-summary.ok-box")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"] + 1, f"{name} scrolls sideways at {viewport['width']} px"
            found = _axe(page)
            if found:
                problems[f"{name} ({label})"] = found
            page.screenshot(path=str(shots / f"{name}-{label}.png"))
        page.context.close()
    with served_signin(site) as signin:
        page = new_page(browser)
        page.goto(signin)
        found = _axe(page)
        if found:
            problems["signin"] = found
        page.screenshot(path=str(shots / "signin-desktop.png"))
    assert not problems, problems


class served_signin:
    """The sign-in page needs an admin key: the same file served once more with one."""

    def __init__(self, site) -> None:  # type: ignore[no-untyped-def]
        self.site = site

    def __enter__(self) -> str:
        env = {**environment(self.site.service.runtime.providers["up"].endpoint.url, ADMIN_KEY)}
        self._cm = served(self.site.path, env)
        server = self._cm.__enter__()
        return f"{server.url}/admin/signin"

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)


def test_no_page_fetches_anything_from_elsewhere(browser, site) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for path in PAGES.values():
        page.goto(f"{site.url}{path}")
        page.wait_for_load_state("load")
    time.sleep(0.1)
    assert requested and all(url.startswith(site.url) or url.startswith("data:") for url in requested), requested
