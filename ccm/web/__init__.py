"""ccm's pages: the admin page at `/admin` (and, with the ledger, the key holders' dashboard at `/`).

    mount_pages(service, environ) -> None     mount them on a `ccm.service.Service` (what `ccm run` calls)

The pages are Starlette apps with Jinja2 templates and assets shipped in this package (no CDN; a little vanilla
script; the route language's highlighter is `static/highlight.js`). They are mounted beside the API, which keeps
`/v1/*` and `/health` (the service tests those paths first); nothing of them runs on the hot path, and nothing of
them is even imported until the first request under `/admin` (starlette and jinja2 cost ~0.2 s to import).

Layout (one idea per module):

    site.py      what every page shares: templates, the network guard, `Site.page` (session + CSRF), forms
    auth.py      sessions (admin and key-holder audiences kept apart), the CSRF token, the sign-in throttle
    signin.py    sign-in/sign-out for an audience (admin: CCM_ADMIN_KEY; the dashboard: a ledger key, later)
    admin.py     overview, routes and explain, provider tests, history and git
    editor.py    the editor: check as you type, diff, save with If-Match, the everyday forms
    edits.py     the forms as text edits of the parsed file (comments and layout kept)
    routefile.py the file's versions, the atomic save, literal-secret redaction, git
    views.py     the service's state as plain rows (no secrets); probe.py the 1-token provider test
    chart.py     SVG charts drawn on the server (the dashboard's usage charts use it too)

The dashboard slots in as a second app built on the same `Site` (one session store: its `key` audience; one CSRF
mechanism; the same base template and assets), mounted at `/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccm.core.types import ASGIApp, Receive, Scope, Send

ADMIN_PREFIX = "/admin"


class _Lazy:
    """An ASGI app built on its first request: `ccm run` starts no slower for the pages."""

    def __init__(self, build: Any) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


def mount_pages(service: Any, environ: Mapping[str, str]) -> None:
    """Mount the admin page at /admin on `service` (a `ccm.service.Service`)."""

    def build() -> ASGIApp:
        from ccm.web.admin import admin_app
        from ccm.web.site import Site

        site = Site(environ.get("CCM_ADMIN_KEY") or None)
        return site.guard(admin_app(service, environ, site))

    service.mount(ADMIN_PREFIX, _Lazy(build))
