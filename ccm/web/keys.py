"""The admin's keys pages, `/admin/keys`: issue and manage the ledger's keys, see each key's usage, export usage.

    GET  /keys                   the keys, 100 a page (`?q=` searches names): status, balance, spend, budget, limits;
                                 the form to create one
    POST /keys                   create a key: its secret is shown on the answer, once (only its hash is stored)
    GET  /keys/{name}            one key: its standing, its usage (the dashboard's charts), the forms below
    POST /keys/{name}/credits    top up (prepaid keys)
    POST /keys/{name}/limits     replace the budget (and its period) and the rate limits
    POST /keys/{name}/rotate     a new secret, shown once; the old one works for the grace period given
    POST /keys/{name}/revoke     revoke: the key's next request gets 401
    GET  /usage.csv              usage rows as CSV (`?key=NAME|(local)&since=30d&until=…`), streamed from the ledger

Every form is read and checked before the ledger is touched, and each change is one ledger transaction, so bad
input writes nothing and gets a readable error (422) in place. Money is typed as decimal dollars and read by
`ccm.ledger.money.parse_usd` (never a float). Revoking or rotating a key ends the dashboard sessions made with it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ccm.ledger.activity import key_activity
from ccm.ledger.errors import BadInput, LedgerError, UnknownKey
from ccm.ledger.keys import check_name, parse_limit, parse_models
from ccm.ledger.ledger import Ledger
from ccm.ledger.money import parse_usd
from ccm.ledger.records import NewKey
from ccm.ledger.reports import LOCAL, export_csv
from ccm.ledger.times import PERIODS, Period, now, parse_duration, parse_future, parse_instant
from ccm.web.site import Site, read_form
from ccm.web.usage import NoLedger, all_under_policies, ledger_of, standing, under_policies, usage_view

NOTE_LIMIT = 500
PAGE = 100  # keys per page of the list (in name order; `?after=NAME` for the next page, `?q=TEXT` to search)
DONE = {  # what a change just did (the redirect names one of these, never free text)
    "credited": "Credit added.",
    "limits": "Budget and limits saved.",
    "revoked": "Key revoked: its next request gets 401, and whoever was signed in with it is signed out.",
}

# how a page answers a form it refuses: the page again, or an error page, with the problem (422)
InPlace = Callable[[str], Awaitable[Response]]


def _text(form: dict[str, str], name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


def _problem(error: LedgerError) -> str:
    return error.message + (f" ({error.hint})" if error.hint else "")


def _period(text: str | None) -> Period | None:
    if text is None:
        return None
    if text not in PERIODS:
        raise BadInput(f"`{text}` is not a budget period", "day, week or month")
    return text  # type: ignore[return-value]


def new_key_from(form: dict[str, str]) -> NewKey:
    """The create form as a `NewKey`, every field checked (`BadInput` names the first bad one)."""
    budget, period = _text(form, "budget"), _period(_text(form, "period"))
    if (budget is None) != (period is None):
        raise BadInput("a budget and its period go together", "e.g. a budget of 50 per month")
    credits, models, rpm, tpm, expires = (_text(form, f) for f in ("credits", "models", "rpm", "tpm", "expires"))
    note = _text(form, "note")
    if note is not None and len(note) > NOTE_LIMIT:
        raise BadInput(f"the note is longer than {NOTE_LIMIT} characters")
    return NewKey(
        name=check_name(form.get("name", "").strip()),
        credits=parse_usd(credits) if credits is not None else None,
        budget=parse_usd(budget, allow_zero=False) if budget is not None else None,
        period=period,
        models=parse_models(models) if models is not None else (),
        rpm=parse_limit(rpm, "rpm") if rpm is not None else None,
        tpm=parse_limit(tpm, "tpm") if tpm is not None else None,
        expires_at=parse_future(expires) if expires is not None else None,
        note=note,
    )


class Keys:
    def __init__(self, service: Any, site: Site) -> None:
        self.service = service
        self.site = site

    def routes(self) -> list[Route]:
        page = self.site.page
        return [
            Route("/keys", page(self.list_page), methods=["GET"]),
            Route("/keys", page(self.create), methods=["POST"]),
            Route("/keys/{name}", page(self.key_page), methods=["GET"]),
            Route("/keys/{name}/credits", page(self.top_up), methods=["POST"]),
            Route("/keys/{name}/limits", page(self.limits), methods=["POST"]),
            Route("/keys/{name}/rotate", page(self.rotate), methods=["POST"]),
            Route("/keys/{name}/revoke", page(self.revoke), methods=["POST"]),
            Route("/usage.csv", page(self.export), methods=["GET"]),
        ]

    def _unavailable(self, request: Request, error: Exception) -> Response:
        message = str(error) if isinstance(error, NoLedger) else f"the usage ledger refused: {error}"
        return self.site.render(request, "error.html", status_code=503, title="Unavailable", message=message)

    def _no_such_key(self, request: Request, missing: UnknownKey) -> Response:
        return self.site.render(request, "error.html", status_code=404, title="No such key", message=_problem(missing))

    async def _refused(self, request: Request, error: NoLedger | LedgerError, in_place: InPlace) -> Response:
        """The answer to a change the ledger did not make: an unknown key 404, bad input `in_place` (422), no ledger
        or one that refused 503. (`UnknownKey` is a `BadInput`, `BadInput` a `LedgerError`: the order matters.)"""
        if isinstance(error, UnknownKey):
            return self._no_such_key(request, error)
        if isinstance(error, BadInput):
            return await in_place(_problem(error))
        return self._unavailable(request, error)

    def _key_page_again(self, request: Request) -> InPlace:
        return lambda problem: self.key_page(request, status=422, error=problem)

    # --- the list and create ----------------------------------------------------------------------------------

    async def list_page(self, request: Request, *, status: int = 200, error: str | None = None,
                        form: dict[str, str] | None = None) -> Response:
        query = request.query_params
        after, contains = query.get("after") or None, (query.get("q") or "").strip()[:64] or None
        try:
            ledger = await ledger_of(self.service)
            keys = await ledger.keys_page(after=after, limit=PAGE + 1, contains=contains)
            at = now()
            shown = keys[:PAGE]
            effective = await all_under_policies(ledger, self.service.runtime.table, [key for key, _ in shown])
            rows = [standing(key, account, at, spent)
                    for (key, spent), (_, account) in zip(effective, shown, strict=True)]
        except (NoLedger, LedgerError) as failure:
            return self._unavailable(request, failure)
        following = rows[-1].name if len(keys) > PAGE else None
        return self.site.render(request, "keys.html", status_code=status, title="Keys", keys=rows, error=error,
                                form=form or {}, periods=PERIODS, q=contains or "", after=after,
                                following=following)

    async def create(self, request: Request) -> Response:
        form = await read_form(request)
        shown = {k: v for k, v in form.items() if k != "csrf"}
        try:
            new = new_key_from(form)
            ledger = await ledger_of(self.service)
            key, secret = await ledger.create_key(new)
        except BadInput as error:
            return await self.list_page(request, status=422, error=_problem(error), form=shown)
        except (NoLedger, LedgerError) as failure:
            return self._unavailable(request, failure)
        return self.site.render(request, "secret.html", status_code=201, title="Key created", key_name=key.name,
                                secret=secret, rotated=False)

    # --- one key ----------------------------------------------------------------------------------------------

    async def key_page(self, request: Request, *, status: int = 200, error: str | None = None) -> Response:
        name = request.path_params["name"]
        try:
            ledger = await ledger_of(self.service)
            at = now()
            found = await key_activity(ledger.store, name, at)
            if found is None:
                raise UnknownKey(name)
            key, account, activity = found
            effective, spent = await under_policies(ledger, self.service.runtime.table, key)
        except UnknownKey as missing:
            return self._no_such_key(request, missing)
        except (NoLedger, LedgerError) as failure:
            return self._unavailable(request, failure)
        done = DONE.get(request.query_params.get("done", ""))
        return self.site.render(request, "key.html", status_code=status, title=f"Key {key.name}",
                                key=standing(effective, account, at, spent), info=key, usage=usage_view(activity),
                                error=error,
                                done=done, periods=PERIODS)

    async def _change(self, request: Request, change: Any, done: str) -> Response:
        """Run `change(ledger, name, form)`; then back to the key's page (or the page again with the error)."""
        name = request.path_params["name"]
        form = await read_form(request)
        try:
            ledger = await ledger_of(self.service)
            await change(ledger, name, form)
        except (NoLedger, LedgerError) as failure:
            return await self._refused(request, failure, self._key_page_again(request))
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}/keys/{urllib.parse.quote(name)}?done={done}", 303)

    async def top_up(self, request: Request) -> Response:
        async def change(ledger: Ledger, name: str, form: dict[str, str]) -> None:
            amount = parse_usd(form.get("amount", ""), allow_zero=False)
            note = _text(form, "note")
            if note is not None and len(note) > NOTE_LIMIT:
                raise BadInput(f"the note is longer than {NOTE_LIMIT} characters")
            await ledger.add_credits(name, amount, note or "added on the admin page")

        return await self._change(request, change, "credited")

    async def limits(self, request: Request) -> Response:
        async def change(ledger: Ledger, name: str, form: dict[str, str]) -> None:
            budget, rpm, tpm = _text(form, "budget"), _text(form, "rpm"), _text(form, "tpm")
            await ledger.set_limits(
                name, budget=parse_usd(budget, allow_zero=False) if budget is not None else None,
                period=_period(_text(form, "period")) if budget is not None else None,
                rpm=parse_limit(rpm, "rpm") if rpm is not None else None,
                tpm=parse_limit(tpm, "tpm") if tpm is not None else None)

        return await self._change(request, change, "limits")

    async def revoke(self, request: Request) -> Response:
        async def change(ledger: Ledger, name: str, form: dict[str, str]) -> None:
            if form.get("confirm") != name:
                raise BadInput("to revoke, type the key's name to confirm")
            key = await ledger.revoke(name)
            self.site.sessions.end_subject("key", str(key.id))

        return await self._change(request, change, "revoked")

    async def rotate(self, request: Request) -> Response:
        name = request.path_params["name"]
        form = await read_form(request)
        try:
            grace = parse_duration(form.get("grace", "0") or "0")
            ledger = await ledger_of(self.service)
            key, secret = await ledger.rotate(name, grace)
        except (NoLedger, LedgerError) as failure:
            return await self._refused(request, failure, self._key_page_again(request))
        self.site.sessions.end_subject("key", str(key.id))
        return self.site.render(request, "secret.html", status_code=200, title="Key rotated", key_name=key.name,
                                secret=secret, rotated=True)

    # --- export -----------------------------------------------------------------------------------------------

    def _not_exported(self, request: Request) -> InPlace:
        async def answer(problem: str) -> Response:
            return self.site.render(request, "error.html", status_code=422, title="Not exported", message=problem)

        return answer

    async def export(self, request: Request) -> Response:
        query = request.query_params
        try:
            since = parse_instant(query["since"]) if query.get("since") else 0
            until = parse_instant(query["until"]) if query.get("until") else now() + 1
            key = query.get("key") or None
            ledger = await ledger_of(self.service)
            if key is not None and key != LOCAL:
                await ledger.key(key)  # an unknown name is a 404 before the download starts
            chunks = export_csv(ledger.store, since=since, until=until, key=key)
            first = await anext(chunks)
        except (NoLedger, LedgerError) as failure:
            return await self._refused(request, failure, self._not_exported(request))

        async def body() -> AsyncIterator[bytes]:
            yield first.encode()
            async for chunk in chunks:
                yield chunk.encode()

        filename = f"ccm-usage-{key or 'all'}.csv"
        return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers={
            "content-disposition": f'attachment; filename="{filename}"', "cache-control": "no-store"})
