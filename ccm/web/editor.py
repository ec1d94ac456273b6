"""The editor: routes.ccm in the browser, checked as you type, saved only when the one check passes.

    GET  /editor              the file (literal secrets as placeholders), its version, the everyday forms
    POST /api/check           {text} -> the check's diagnostics and test results (debounced by the page)
    POST /api/diff            {text} -> the unified diff against the file on disk
    GET  /api/file            {text, version} (ETag: the version)
    PUT  /api/file            {text} with If-Match: version -> 200 saved / 412 the file changed / 422 it fails the
                              check / 428 no If-Match
    POST /save                the same save from a plain form (fields text, version): pages without script
    POST /edit                a form's change (kind, action, fields) -> a review page: the diff, the check, Save
    GET  /api/status          the reload that followed a save (?table=version): pending, ok or rejected

Saving re-reads the file, compares its version with the one the editor started from, checks the text with the one
check, and writes it atomically (`RouteFile.save`); the watcher reloads it. The page then asks `/api/status` for
the reload's outcome. The text the browser holds never has a literal secret in it: placeholders are put back from
the file on disk at the version being replaced, which `If-Match` has just proven is the one the editor showed.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccm.compile.check import Checked
from ccm.diagnostics import Diagnostic
from ccm.web import edits
from ccm.web.context import AdminContext
from ccm.web.routefile import Conflict, Redaction, UnknownPlaceholder, unified_diff
from ccm.web.site import BodyTooLarge, read_body, read_form
from ccm.web.views import AdminSave, history_rows

MAX_TEXT = 1024 * 1024


class Refused(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def diagnostics_json(checked: Checked, redaction: Redaction, name: str) -> dict[str, Any]:
    def one(d: Diagnostic) -> dict[str, Any]:
        return {
            "file": d.file if d.file != name else "", "line": d.line, "column": d.column, "width": d.width,
            "severity": d.severity, "message": redaction.shown(d.message),
            "hint": redaction.shown(d.hint) if d.hint else None,
        }

    table = checked.compiled
    tests = len(table.tests) if table is not None else 0
    return {
        "ok": checked.ok,
        "errors": len(checked.errors),
        "warnings": len(checked.warnings),
        "tests": tests,
        "failed_tests": len(checked.failures),
        "diagnostics": [one(d) for d in checked.reported],
        "table_version": table.version if table is not None else None,
    }


class Editor:
    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.site = context.site

    def routes(self) -> list[Route]:
        page = self.site.page
        return [
            Route("/editor", page(self.editor_page)),
            Route("/api/check", page(self.check_api), methods=["POST"]),
            Route("/api/diff", page(self.diff_api), methods=["POST"]),
            Route("/api/file", page(self.file_api), methods=["GET", "PUT"]),
            Route("/save", page(self.save_form), methods=["POST"]),
            Route("/edit", page(self.edit_form), methods=["POST"]),
            Route("/api/status", page(self.status_api)),
        ]

    # --- pages -----------------------------------------------------------------------------------------------

    async def editor_page(self, request: Request) -> Response:
        snapshot, redaction = self.context.snapshot()
        checked = await self.context.check_text(snapshot.text)
        from ccm.web.views import model_rows, provider_rows, rule_rows

        runtime = self.context.runtime
        rules = _syntax_rules(snapshot.text, self.context.name)
        providers, models = provider_rows(runtime, []), model_rows(runtime.table)
        return self.site.render(
            request, "editor.html", title="Editor", text=redaction.shown(snapshot.text), version=snapshot.version,
            file=self.context.file.path.name, check=diagnostics_json(checked, redaction, self.context.name),
            providers=providers, models=models, rules=rules,
            providers_form={p.name: {"type": p.type, "url": p.url_form, "key": p.key_variable} for p in providers},
            models_form={m.name: m.form for m in models},
            compiled_rules=rule_rows(runtime.table), fallbacks=dict(runtime.table.fallbacks),
            provider_types=edits.PROVIDER_TYPES, aliases=sorted(m for m in runtime.table.models
                                                                if runtime.table.models[m].declared),
        )

    # --- the JSON API the editor's script uses ---------------------------------------------------------------

    async def _text(self, request: Request) -> str:
        try:
            data = orjson.loads(await read_body(request, MAX_TEXT + 4096))
        except BodyTooLarge:
            raise Refused(413, "the text is too large") from None
        except orjson.JSONDecodeError:
            raise Refused(400, "send JSON: {\"text\": …}") from None
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise Refused(400, "send JSON: {\"text\": …}")
        return text

    async def check_api(self, request: Request) -> Response:
        try:
            text = await self._text(request)
        except Refused as refused:
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        _, redaction = self.context.snapshot()
        try:
            restored = redaction.restore(text)
        except UnknownPlaceholder as error:
            return JSONResponse({"error": f"{error} is not a secret of the file on disk"}, status_code=422)
        checked = await self.context.check_text(restored)
        return JSONResponse(diagnostics_json(checked, redaction, self.context.name))

    async def diff_api(self, request: Request) -> Response:
        try:
            text = await self._text(request)
        except Refused as refused:
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        snapshot, redaction = self.context.snapshot()
        diff = unified_diff(redaction.shown(snapshot.text), text, self.context.file.path.name)
        return JSONResponse({"diff": diff, "version": snapshot.version})

    async def file_api(self, request: Request) -> Response:
        if request.method == "GET":
            snapshot, redaction = self.context.snapshot()
            return JSONResponse({"text": redaction.shown(snapshot.text), "version": snapshot.version},
                                headers={"etag": f'"{snapshot.version}"', "cache-control": "no-store"})
        expected = request.headers.get("if-match", "").strip().strip('"')
        if not expected:
            return JSONResponse({"error": "a save names the version it replaces (If-Match)"}, status_code=428)
        try:
            text = await self._text(request)
            result = await self.save(request, text, expected)
        except Refused as refused:
            return JSONResponse({"error": refused.message, **refused.extra}, status_code=refused.status)
        return JSONResponse(result, headers={"etag": f'"{result["version"]}"'})

    async def save(self, request: Request, text: str, expected: str) -> dict[str, Any]:
        """Check and write; what was saved. `Refused` with 412 (conflict), 422 (fails the check or a stray
        placeholder) or 413."""
        if len(text.encode()) > MAX_TEXT:
            raise Refused(413, "the text is too large")
        snapshot, redaction = self.context.snapshot()
        if snapshot.version != expected:
            raise Refused(412, "the route file changed since you opened it: nothing was saved; your text is kept "
                          "in the editor — see the difference, merge, and save again", version=snapshot.version,
                          diff=unified_diff(text, redaction.shown(snapshot.text), self.context.file.path.name))
        try:
            restored = redaction.restore(text)
        except UnknownPlaceholder as error:
            raise Refused(422, f"{error} is not a secret of the file on disk") from None
        checked = await self.context.check_text(restored)
        if not checked.ok:
            raise Refused(422, "the file fails the check: nothing was saved",
                          check=diagnostics_json(checked, redaction, self.context.name))
        assert checked.table is not None
        try:
            saved = await self.context.file.save(restored, expected)
        except Conflict as conflict:
            raise Refused(412, "the route file changed while saving: nothing was saved",
                          version=conflict.current.version) from None
        session = getattr(request.state, "session", None)
        self.context.saves.append(AdminSave(time.time(), checked.table.version, saved.version,
                                            session.subject if session is not None else "?"))
        return {"saved": True, "version": saved.version, "table_version": checked.table.version,
                "check": diagnostics_json(checked, Redaction.of(restored, self.context.name), self.context.name)}

    async def status_api(self, request: Request) -> Response:
        wanted = request.query_params.get("table", "")
        reloader = self.context.service.reloader  # type: ignore[attr-defined]
        for row in history_rows(reloader.history, list(self.context.saves)):
            if row.version == wanted:
                return JSONResponse({"state": "ok" if row.ok else "rejected", "source": row.source,
                                     "summary": row.summary, "version": row.version})
        serving = self.context.runtime.table.version
        if serving == wanted:
            return JSONResponse({"state": "ok", "source": "", "summary": "serving", "version": serving})
        status = reloader.status()
        error = status.get("last_error")
        return JSONResponse({"state": "pending", "serving": serving, "last_error": error})

    # --- plain forms (no script needed) -------------------------------------------------------------------------

    async def save_form(self, request: Request) -> Response:
        form = await read_form(request)
        text = form.get("text", "").replace("\r\n", "\n")
        try:
            result = await self.save(request, text, form.get("version", ""))
        except Refused as refused:
            return await self._review(request, text, refused.message, refused.status, form.get("version", ""))
        return self.site.render(request, "saved.html", title="Saved", result=result,
                                file=self.context.file.path.name)

    async def edit_form(self, request: Request) -> Response:
        form = await read_form(request)
        snapshot, redaction = self.context.snapshot()
        if form.get("version") and form["version"] != snapshot.version:
            return self.site.render(request, "error.html", status_code=412, title="Conflict",
                                    message="the route file changed since this page was opened: reload it")
        try:
            edited = _apply(snapshot.text, self.context.name, form)
        except edits.EditError as error:
            return self.site.render(request, "error.html", status_code=422, title="Not changed", message=str(error))
        shown = redaction.shown(edited)
        return await self._review(request, shown, None, 200, snapshot.version)

    async def _review(self, request: Request, text: str, message: str | None, status: int,
                      version: str) -> Response:
        snapshot, redaction = self.context.snapshot()
        try:
            restored = redaction.restore(text)
        except UnknownPlaceholder:
            restored = text
        checked = await self.context.check_text(restored)
        diff = unified_diff(redaction.shown(snapshot.text), text, self.context.file.path.name)
        return self.site.render(
            request, "review.html", status_code=status, title="Review the change", text=text, version=version,
            diff=diff, check=diagnostics_json(checked, redaction, self.context.name), message=message,
            conflict=version != snapshot.version,
        )


def _apply(text: str, name: str, form: dict[str, str]) -> str:
    kind, action = form.get("kind", ""), form.get("action", "set")
    if kind == "provider":
        if action == "remove":
            return edits.remove_provider(text, name, form.get("name", ""))
        return edits.set_provider(text, name, edits.ProviderForm(form.get("name", ""), form.get("type", ""),
                                                                  form.get("url", ""), form.get("key", "")))
    if kind == "model":
        if action == "remove":
            return edits.remove_model(text, name, form.get("name", ""))
        fields = ("name", "target", "context", "max_output", "price_input", "price_output", "cache_write_5m",
                  "cache_write_1h", "cache_read", "web_search")
        return edits.set_model(text, name, edits.ModelForm(**{f: form.get(f, "") for f in fields}))
    if kind == "rule":
        index = _index(form.get("index", ""))
        if action == "remove":
            if index is None:
                raise edits.EditError("which rule?")
            return edits.remove_rule(text, name, index)
        return edits.set_rule(text, name, edits.RuleForm(form.get("condition", ""), form.get("target", ""),
                                                         index, _index(form.get("before", ""))))
    if kind == "fallback":
        if action == "remove":
            return edits.remove_fallback(text, name, form.get("head", ""))
        chain = [n.strip() for n in form.get("chain", "").replace("->", ",").split(",")]
        return edits.set_fallback(text, name, form.get("head", ""), chain)
    raise edits.EditError("unknown form")


def _index(value: str) -> int | None:
    value = value.strip()
    return int(value) - 1 if value.isdigit() and int(value) > 0 else None


def _syntax_rules(text: str, name: str) -> list[dict[str, Any]]:
    """The route block's rules as written (their place is what the rule form names), with their parts."""
    from ccm.dsl import parse
    from ccm.dsl import syntax as s
    from ccm.dsl.parser import RouteSyntaxError
    from ccm.dsl.printer import rule_text

    try:
        tree = parse(text, name)
    except RouteSyntaxError:
        return []
    route = next((st for st in tree.statements if isinstance(st, s.RouteBlock)), None)
    if route is None:
        return []
    return [{"number": i, "condition": rule_text(r), "target": r.target.text if r.target else "",
             "line": r.span.line} for i, r in enumerate(route.rules, 1)]
