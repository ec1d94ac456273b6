"""Sign-in and sign-out for an audience of the pages: the key exchanged for a session cookie.

    signin_routes(site, audience, verify) -> [GET /signin, POST /signin, POST /signout]

`await verify(key) -> subject | None` says who a presented key is: for the admin page, `CCM_ADMIN_KEY` (compared in
constant time); for the dashboard, the id of the active ledger key the secret belongs to (it raises `Unavailable`
when it cannot tell now: a 503, not a failure). The form is bound to a nonce cookie by the same CSRF token as every
other form (`ccm.web.auth`); failures are throttled per client address and overall, each audience apart; a good
sign-in makes a new session (never one the browser brought: no fixation) and sends the visitor where they were
going, on this site only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ccm.web.auth import COOKIES, SIGNIN_COOKIE, SIGNIN_COOKIE_SECONDS, Audience, csrf_token, csrf_valid, new_nonce
from ccm.web.site import BodyTooLarge, Site, client_address, read_form

Verify = Callable[[str], Awaitable["str | None"]]


class Unavailable(Exception):
    """What `verify` raises when it cannot tell now (the ledger cannot be reached): a 503, not a failed sign-in."""


def _next(request: Request, value: str | None) -> str:
    root: str = request.scope.get("root_path", "")
    if value and value.startswith(root + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return root + "/"


def signin_routes(site: Site, audience: Audience, verify: Verify) -> list[Route]:
    async def show(request: Request, status: int = 200, message: str | None = None,
                   next_path: str | None = None) -> Response:
        nonce = request.cookies.get(SIGNIN_COOKIE) or new_nonce()
        response = site.render(request, "signin.html", status_code=status, title="Sign in", message=message,
                               signin_csrf=csrf_token(site.sessions.secret, nonce),
                               next=_next(request, next_path or request.query_params.get("next")),
                               audience=audience)
        response.set_cookie(SIGNIN_COOKIE, nonce, max_age=SIGNIN_COOKIE_SECONDS, path=request.scope.get(
            "root_path", "") + "/signin", httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    async def signin_page(request: Request) -> Response:
        if site.local_only and audience == "admin":
            return RedirectResponse(_next(request, request.query_params.get("next")), 303)
        return await show(request)

    async def signin(request: Request) -> Response:
        try:
            form = await read_form(request)
        except BodyTooLarge:
            return await show(request, 413, "the form is too large")
        nonce = request.cookies.get(SIGNIN_COOKIE, "")
        if not csrf_valid(site.sessions.secret, nonce, form.get("csrf")):
            return await show(request, 403, "the sign-in form expired: try again")
        address = client_address(request)
        throttle = site.throttles[audience]
        wait = throttle.retry_after(address)
        if wait > 0:
            response = await show(request, 429, f"too many failed sign-ins: try again in {wait:.0f} s")
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        try:
            subject = await verify(form.get("key", ""))
        except Unavailable as error:
            return await show(request, 503, str(error), form.get("next"))
        if subject is None:
            throttle.failed(address)
            return await show(request, 401, "that key is not valid here", form.get("next"))
        throttle.succeeded(address)
        for other in (a for a in COOKIES if a == audience):
            old = site.sessions.find(request.cookies.get(COOKIES[other][0]), other)
            if old is not None:
                site.sessions.end(old)
        _, cookie = site.sessions.create(audience, subject)
        response = RedirectResponse(_next(request, form.get("next")), 303)
        site.set_session_cookie(request, response, audience, cookie)
        return response

    async def signout(request: Request) -> Response:
        session = request.state.session
        site.sessions.end(session)
        response = RedirectResponse(request.scope.get("root_path", "") + "/signin", 303)
        site.clear_session_cookie(request, response, audience)
        return response

    return [
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", site.page(signout, audience), methods=["POST"]),
    ]
