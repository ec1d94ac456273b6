"""ccm's pages: the admin page at `/admin` and the key holders' dashboard at `/`.

    mount_pages(service, environ) -> None     mount them on a `ccm.service.Service` (what `ccm run` calls)

The pages are Starlette apps with Jinja2 templates and assets shipped in this package (no CDN; a little vanilla
script; the route language's highlighter is `static/highlight.js`). They are mounted beside the API, which keeps
`/v1/*` and `/health` (the service tests those paths first); nothing of them runs on the hot path, and nothing of
them is even imported until the first request for a page (starlette and jinja2 cost ~0.2 s to import). The mount
at `/` answers the dashboard's few paths (`DASHBOARD_PATHS`, `/static/…`) and hands every other one to the API.

Layout (one idea per module):

    site.py      what every page shares: templates, the network guard, `Site.page` (session + CSRF), forms
    auth.py      sessions (admin and key-holder audiences kept apart), the CSRF token, the sign-in throttle
    signin.py    sign-in/sign-out for an audience (admin: CCM_ADMIN_KEY; the dashboard: a ledger key)
    admin.py     overview, routes and explain, provider tests, history and git
    keys.py      the admin's keys pages: create (secret shown once), revoke, rotate, top up, limits, usage, CSV
    dashboard.py the key holders' dashboard: balance, budget, limits, usage charts, latest requests, models
    usage.py     a key as both show it (standing, charts, latest requests, the models it may use)
    editor.py    the editor: check as you type, diff, save with If-Match, the everyday forms
    edits.py     the forms as text edits of the parsed file (comments and layout kept)
    routefile.py the file's versions, the atomic save, literal-secret redaction, git
    views.py     the service's state as plain rows (no secrets); probe.py the 1-token provider test
    chart.py     SVG charts drawn on the server

The dashboard is a second app on the same `Site` (one session store: its `key` audience; one CSRF mechanism; the
same base template and assets). Unlike the admin page it is not kept to this machine without `CCM_ADMIN_KEY`: its
visitors sign in with their own keys.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ccm.core.types import ASGIApp, Receive, Scope, Send

ADMIN_PREFIX = "/admin"
DASHBOARD_PATHS = ("/", "/signin", "/signout")  # and /static/…: the rest of `/` is the API's


class _Lazy:
    """An ASGI app built on its first request: `ccm run` starts no slower for the pages."""

    def __init__(self, build: Any) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


class _Paths:
    """The mount at `/`: the dashboard's own paths go to it (built on the first of them), every other path to the API,
    as if nothing were mounted there."""

    def __init__(self, dashboard: _Lazy, api: ASGIApp) -> None:
        self._dashboard = dashboard
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path in DASHBOARD_PATHS or path.startswith("/static/")):
            await self._dashboard(scope, receive, send)
        else:
            await self._api(scope, receive, send)


def mount_pages(service: Any, environ: Mapping[str, str]) -> None:
    """Mount the admin page at /admin and the dashboard at / on `service` (a `ccm.service.Service`); both share one
    `Site` (one session store, a sign-in throttle per audience), made with the first of them."""

    @functools.cache
    def site() -> Any:
        from ccm.web.site import Site

        return Site(environ.get("CCM_ADMIN_KEY") or None)

    def admin() -> ASGIApp:
        from ccm.web.admin import admin_app

        return site().guard(admin_app(service, environ, site()))  # type: ignore[no-any-return]

    def dashboard() -> ASGIApp:
        from ccm.web.dashboard import dashboard_app

        return site().guard(dashboard_app(service, environ, site()), loopback_only=False)  # type: ignore[no-any-return]

    service.mount(ADMIN_PREFIX, _Lazy(admin))
    service.mount("/", _Paths(_Lazy(dashboard), service.api))
