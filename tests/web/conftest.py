"""The admin page's harness: a route file in a temporary folder, the service built on it with the pages mounted, and
FakeAnthropic on loopback as the upstream.

    pages(...)      async: the service running (its lifespan entered) and an httpx client on its ASGI app, as a
                    loopback visitor — for the tests that need no browser (`db=URL`: with the usage ledger)
    Served          the service under hypercorn on 127.0.0.1 (a real socket, the watcher reloading on save): the
                    browser tests' server
    browser         (fixture) Debian's chromium, headless, through Playwright: the browser tests' browser
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ccm.service import Service, ServiceOptions, build_service
from ccm.web import mount_pages
from tests.fakes import FakeAnthropic, serve

CHROMIUM = "/usr/bin/chromium"  # Debian's: never a browser Playwright downloads
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

UPSTREAM_KEY = "sk-ant-upstream-secret-0123456789"
ADMIN_KEY = "admin-key-for-tests-0123456789"

ROUTES = """\
# The admin page's test routes.
provider up {
  type anthropic
  url  env("UP_URL")
  key  env("UP_KEY")
}

# A provider nobody listens for: its test fails.
provider down {
  type anthropic
  url  "http://127.0.0.1:9"
  key  env("UP_KEY")
}

model main  = up/claude-main-1
model side  = up/claude-side-1
model spare = down/claude-spare-1

route {
  background -> side  # cheap work
  default    -> main
}

fallback main -> spare

test "background goes to side" {
  request { model: "claude-haiku-5-5" }
  expect  side
}
"""


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeAnthropic]]:
    with serve(FakeAnthropic(api_key=UPSTREAM_KEY)) as (url, app):
        yield url, app
    assert not app.crashes, "\n".join(app.crashes)


def environment(upstream: str, admin_key: str | None = None) -> dict[str, str]:
    env = {"UP_URL": upstream, "UP_KEY": UPSTREAM_KEY}
    if admin_key is not None:
        env["CCM_ADMIN_KEY"] = admin_key
    return env


def write_routes(folder: Path, text: str = ROUTES) -> Path:
    path = folder / "routes.ccm"
    path.write_text(text)
    return path


def build(path: Path, environ: Mapping[str, str], watch: bool = False, db: str | None = None) -> Service:
    service = build_service(path, environ, ServiceOptions(watch=watch, count_tokens=lambda body: 10, db=db))
    mount_pages(service, environ)
    return service


@asynccontextmanager
async def pages(path: Path, environ: Mapping[str, str], *, watch: bool = False,
                client: tuple[str, int] = ("127.0.0.1", 40000),
                base_url: str = "http://127.0.0.1:3456",
                db: str | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, Service]]:
    service = build(path, environ, watch, db)
    async with service.running():
        transport = httpx.ASGITransport(app=service.app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http, service


CSRF = re.compile(r'data-csrf="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None and found.group(1), "no CSRF token on the page"
    return found.group(1)


@dataclass
class Served:
    url: str
    service: Service
    path: Path


@contextmanager
def served(path: Path, environ: Mapping[str, str], db: str | None = None) -> Iterator[Served]:
    service = build(path, environ, watch=True, db=db)
    with serve(service.app) as (url, _):
        yield Served(url, service, path)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser-tools.sh (make test does)")
    from playwright.sync_api import sync_playwright  # only the browser tests pay for it

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
