"""The admin page, `/admin`: the service's state, the routes, the editor, provider tests, the history.

    GET  /                     overview: table version and file, last reload, providers (type, configured,
                               breaker, in flight, recent errors), the live feed of requests
    GET  /api/feed?after=ID    the requests finished after ID (long poll, up to FEED_WAIT seconds)
    GET  /routes               the rules in order with their chains, the models; POST /routes explains a request
    POST /api/explain          {request, headers} -> `ccm explain`'s answer
    POST /test-provider        (form) / POST /api/test-provider {provider, model}: one real 1-token call
    POST /capture/start        (form: folder) request capture into that folder (`ccm.capture`); /capture/stop ends it
    GET  /history              every reload (source, summary, result); the working tree's git diff
    POST /commit               (form) commit the route file with a message
    /editor, /api/check, …     the editor (`ccm.web.editor`)
    /keys, /usage.csv, …       the ledger's keys and usage (`ccm.web.keys`)
    /signin, /signout          `ccm.web.signin`; /static/… the assets shipped in the package

`admin_app(service, environ, site)` builds it; `ccm.web.mount_pages` mounts it. Every endpoint but sign-in and the
assets needs an admin session; every one that changes state, its CSRF token (`Site.page`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ccm.capture import CaptureError, capture_folder, default_folder
from ccm.compile.check import check
from ccm.web.auth import same_key
from ccm.web.chart import bar_chart
from ccm.web.context import AdminContext
from ccm.web.editor import Editor
from ccm.web.keys import Keys
from ccm.web.probe import test_provider
from ccm.web.routefile import Git, RouteFile, redact_lines
from ccm.web.signin import signin_routes
from ccm.web.site import BodyTooLarge, Site, read_body, read_form
from ccm.web.views import (
    CaptureView,
    capture_view,
    explain,
    history_rows,
    model_rows,
    provider_rows,
    record_row,
    rule_rows,
    source_of,
)

FEED_WAIT = 15.0
FEED_ROWS = 50
COMMIT_MESSAGE_LIMIT = 2000


class Admin:
    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.site = context.site
        self._switching = anyio.Lock()  # one capture start or stop at a time

    def routes(self) -> list[Route]:
        page = self.site.page
        return [
            Route("/", page(self.overview)),
            Route("/api/feed", page(self.feed)),
            Route("/routes", page(self.routes_page), methods=["GET", "POST"]),
            Route("/api/explain", page(self.explain_api), methods=["POST"]),
            Route("/test-provider", page(self.test_provider_form), methods=["POST"]),
            Route("/api/test-provider", page(self.test_provider_api), methods=["POST"]),
            Route("/capture/start", page(self.start_capture), methods=["POST"]),
            Route("/capture/stop", page(self.stop_capture), methods=["POST"]),
            Route("/history", page(self.history)),
            Route("/commit", page(self.commit), methods=["POST"]),
        ]

    @property
    def service(self) -> Any:
        return self.context.service

    # --- overview ---------------------------------------------------------------------------------------------

    async def overview(self, request: Request, probe: Any = None, capture: CaptureView | None = None,
                       status_code: int = 200) -> Response:
        runtime = self.context.runtime
        reloader = self.service.reloader
        status = reloader.status()
        last = reloader.history[-1] if reloader.history else None
        rows = history_rows(reloader.history, list(self.context.saves))
        problems: list[str] = []
        if status.get("last_error"):
            checked = await anyio.to_thread.run_sync(lambda: check(self.context.file.path, self.context.environ))
            _, redaction = self.context.snapshot()
            problems = [redaction.shown(d.render()) for d in checked.problems]
        records = self.service.recent.snapshot()
        statuses: dict[str, int] = {}
        for record in records:
            label = f"{record.status // 100}xx"
            statuses[label] = statuses.get(label, 0) + 1
        chart = bar_chart(sorted(statuses.items()), title="Recent requests by status", unit="requests")
        return self.site.render(
            request, "overview.html", status_code=status_code, title="Overview", table=runtime.table,
            file=str(self.context.file.path), status=status, last=last,
            last_source=rows[0].source if rows else None, problems=problems,
            providers=provider_rows(runtime, records), feed=[record_row(r) for r in records[-FEED_ROWS:]][::-1],
            chart=chart, probe=probe, capture=capture or self._capture_view(),
        )

    async def feed(self, request: Request) -> Response:
        after = request.query_params.get("after", "")
        recent = self.service.recent

        def newer() -> list[dict[str, Any]]:
            records = recent.snapshot()
            ids = [r.request_id for r in records]
            start = ids.index(after) + 1 if after in ids else max(0, len(records) - FEED_ROWS)
            return [record_row(r) for r in records[start:]]

        rows = newer()
        if not rows and after:
            with anyio.move_on_after(FEED_WAIT):
                await recent.wait()
            rows = newer()
        return JSONResponse({"rows": rows}, headers={"cache-control": "no-store"})

    # --- routes -----------------------------------------------------------------------------------------------

    async def routes_page(self, request: Request) -> Response:
        table = self.context.runtime.table
        explained: dict[str, Any] | None = None
        pasted, headers = "", ""
        if request.method == "POST":
            form = await read_form(request)
            pasted, headers = form.get("request", ""), form.get("headers", "")
            explained = explain(table, pasted, headers)
        return self.site.render(request, "routes.html", title="Routes", table=table, rules=rule_rows(table),
                                models=model_rows(table), explained=explained, pasted=pasted, headers=headers)

    async def explain_api(self, request: Request) -> Response:
        try:
            data = orjson.loads(await read_body(request))
        except (BodyTooLarge, orjson.JSONDecodeError):
            return JSONResponse({"error": "send JSON: {\"request\": \"…\", \"headers\": \"name: value\"}"}, 400)
        if not isinstance(data, dict) or not isinstance(data.get("request"), str):
            return JSONResponse({"error": "send JSON: {\"request\": \"…\"}"}, 400)
        headers = data.get("headers") if isinstance(data.get("headers"), str) else ""
        return JSONResponse(explain(self.context.runtime.table, data["request"], str(headers)))

    # --- test provider ----------------------------------------------------------------------------------------

    async def test_provider_form(self, request: Request) -> Response:
        form = await read_form(request)
        result = await test_provider(self.context.runtime, form.get("provider", ""), form.get("model") or None)
        return await self.overview(request, probe=result)

    async def test_provider_api(self, request: Request) -> Response:
        try:
            data = orjson.loads(await read_body(request))
        except (BodyTooLarge, orjson.JSONDecodeError):
            return JSONResponse({"error": "send JSON: {\"provider\": …}"}, 400)
        if not isinstance(data, dict) or not isinstance(data.get("provider"), str):
            return JSONResponse({"error": "send JSON: {\"provider\": …}"}, 400)
        model = data.get("model") if isinstance(data.get("model"), str) else None
        result = await test_provider(self.context.runtime, data["provider"], model or None)
        return JSONResponse(result.to_json())

    # --- request capture ------------------------------------------------------------------------------------

    def _capture_view(self, typed: str | None = None, error: str | None = None) -> CaptureView:
        proposed = str(default_folder(self.context.environ))
        return capture_view(self.service.capture.status(), proposed, typed, error)

    async def start_capture(self, request: Request) -> Response:
        typed = (await read_form(request)).get("folder", "")
        try:
            folder = capture_folder(typed)
            async with self._switching:  # off the loop: it creates the folder, and stops a capture running
                await anyio.to_thread.run_sync(self.service.capture.start, folder)
        except CaptureError as refused:
            return await self.overview(request, capture=self._capture_view(typed, str(refused)), status_code=422)
        return self._back_to_capture(request)

    async def stop_capture(self, request: Request) -> Response:
        async with self._switching:  # off the loop: stopping waits for the queued requests to be written
            await anyio.to_thread.run_sync(self.service.capture.stop)
        return self._back_to_capture(request)

    def _back_to_capture(self, request: Request) -> Response:
        """After a change, the overview by GET (reloading the page posts nothing again)."""
        return RedirectResponse(f"{request.scope.get('root_path', '')}/#capture", 303)

    # --- history and git --------------------------------------------------------------------------------------

    async def history(self, request: Request, commit: Any = None) -> Response:
        reloader = self.service.reloader
        rows = history_rows(reloader.history, list(self.context.saves))
        git = self.context.git
        repository = await git.repository()
        diff = status = ""
        if repository is not None:
            snapshot, redaction = self.context.snapshot()
            values = redaction.values()  # (a literal key in a committed version is cut by shape: `redact_lines`)
            diff = redact_lines(await git.diff(), values)
            status = redact_lines(await git.status(), values)
        return self.site.render(request, "history.html", title="History", rows=rows, saves=list(self.context.saves),
                                repository=str(repository) if repository else None, diff=diff, git_status=status,
                                commit=commit, loaded_at=reloader.status().get("loaded_at"),
                                source_of=source_of)

    async def commit(self, request: Request) -> Response:
        form = await read_form(request)
        message = form.get("message", "").strip()
        if not message or len(message) > COMMIT_MESSAGE_LIMIT or "\x00" in message:
            return self.site.render(request, "error.html", status_code=422, title="Not committed",
                                    message="a commit needs a message (at most 2,000 characters)")
        if await self.context.git.repository() is None:
            return self.site.render(request, "error.html", status_code=409, title="Not committed",
                                    message="the route file is not in a git repository")
        result = await self.context.git.commit(message)
        _, redaction = self.context.snapshot()
        shown = {"ok": result.ok, "output": redact_lines(result.output, redaction.values())}
        return await self.history(request, commit=shown)


def admin_app(service: Any, environ: Mapping[str, str], site: Site | None = None) -> Starlette:
    """The admin page's Starlette app for `service` (a `ccm.service.Service`)."""
    admin_key = environ.get("CCM_ADMIN_KEY") or None
    site = site if site is not None else Site(admin_key)
    path = Path(service.reloader.path)
    context = AdminContext(site, service, environ, RouteFile(path), Git(path))

    async def verify(key: str) -> str | None:
        if site.admin_key is not None and key and same_key(key, site.admin_key):
            return "admin"
        return None

    static = StaticFiles(packages=[("ccm.web", "static")])
    routes = [
        *signin_routes(site, "admin", verify),
        *Admin(context).routes(),
        *Editor(context).routes(),
        *Keys(service, site).routes(),
        Mount("/static", app=static, name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.context = context
    return app

