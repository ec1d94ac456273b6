"""What every page of ccm shares: templates, assets, the network guard, sign-in state and the CSRF check.

    Site(admin_key)                  one per service: the Jinja2 environment, the sessions, a sign-in throttle per
                                     audience
    site.guard(app)                  the ASGI guard around a pages app (below)
    site.page(handler, audience)     a Starlette endpoint that needs a session of `audience`; a request that changes
                                     state (any method but GET/HEAD) also needs the session's CSRF token
    site.render(request, name, ...)  a template as an HTML response (autoescaped; `csrf`, `root`, `asset` provided)
    read_form(request)               the url-encoded form of a request, bounded

The guard, in front of every page and asset:
  - without an admin key (`CCM_ADMIN_KEY` unset) the pages are for this machine only, as the API is without inbound
    keys: the peer address must be loopback, `Host` a loopback name (no DNS rebinding), an `Origin` loopback;
  - any request that changes state must come from the page itself: an `Origin` other than the request's own, or a
    `Sec-Fetch-Site` other than same-origin/none, is refused (before the CSRF token is even looked at);
  - every response gets a strict Content-Security-Policy (scripts and styles from ccm's own assets only, no inline
    script), `nosniff`, no framing, no referrer to other sites, and pages are not cached.

Sessions are `ccm.web.auth`'s. Without an admin key, a loopback visitor gets a `local` admin session on first
visit (the CSRF token needs something to bind to); with one, the pages ask for the key (`ccm.web.signin`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from ccm.core.admission import loopback_host
from ccm.core.types import ASGIApp, Message, Receive, Scope, Send
from ccm.web.auth import COOKIES, Audience, Session, Sessions, Throttle, csrf_valid

Endpoint = Callable[[Request], Awaitable[Response]]

SAFE_METHODS = frozenset({"GET", "HEAD"})
FORM_LIMIT = 2 * 1024 * 1024  # the largest form or JSON body a page accepts (a route file is far smaller)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Chromium send `Origin: null` on form posts
    (b"cross-origin-opener-policy", b"same-origin"),
]


class BodyTooLarge(Exception):
    pass


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ccm.web", "templates"),
        autoescape=True,  # every value from the route file, the request log or the user is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ms"] = lambda value: "" if value is None else f"{value:,.0f} ms"
    env.filters["number"] = lambda value: "" if value is None else f"{value:,}"
    return env


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _asset_version() -> str:
    digest = hashlib.sha256()
    for item in sorted(resources.files("ccm.web").joinpath("static").iterdir(), key=lambda p: p.name):
        if item.is_file():
            digest.update(item.name.encode() + item.read_bytes())
    return digest.hexdigest()[:10]


class Site:
    def __init__(self, admin_key: str | None, *, sessions: Sessions | None = None) -> None:
        self.admin_key = admin_key or None
        self.sessions = sessions if sessions is not None else Sessions()
        # one per audience: a crowd guessing keys at the dashboard never makes the admin's sign-in wait
        self.throttles: dict[Audience, Throttle] = {"admin": Throttle(), "key": Throttle()}
        self.templates = _templates()
        self.asset_version = _asset_version()

    @property
    def local_only(self) -> bool:
        return self.admin_key is None

    # --- pages ----------------------------------------------------------------------------------------------

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        session: Session | None = getattr(request.state, "session", None)
        root = request.scope.get("root_path", "")
        html = self.templates.get_template(name).render(
            root=root,
            asset=lambda file: f"{root}/static/{file}?v={self.asset_version}",
            csrf=session.csrf if session is not None else "",
            session=session,
            local_only=self.local_only,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers={"cache-control": "no-store"})

    def page(self, handler: Endpoint, audience: Audience = "admin") -> Endpoint:
        async def endpoint(request: Request) -> Response:
            session, cookie = self._session(request, audience)
            api = request.url.path.startswith(request.scope.get("root_path", "") + "/api/")
            if session is None:
                if api:
                    return JSONResponse({"error": "sign in first"}, status_code=401)
                target = urllib.parse.quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
                return RedirectResponse(f"{request.scope.get('root_path', '')}/signin?next={target}", 303)
            request.state.session = session
            if request.method not in SAFE_METHODS:
                presented = request.headers.get("x-csrf-token")
                if presented is None and _is_form(request):
                    try:
                        presented = (await read_form(request)).get("csrf")
                    except BodyTooLarge:
                        return PlainTextResponse("the form is too large", status_code=413)
                if not csrf_valid(self.sessions.secret, session.id, presented):
                    message = "this request needs the page's CSRF token (reload the page and try again)"
                    if api:
                        return JSONResponse({"error": message}, status_code=403)
                    return self.render(request, "error.html", status_code=403, title="Refused", message=message)
            response = await handler(request)
            if cookie is not None:
                self.set_session_cookie(request, response, audience, cookie)
            return response

        return endpoint

    def _session(self, request: Request, audience: Audience) -> tuple[Session | None, str | None]:
        """The request's session, and the cookie to set when one was just made (a loopback visitor, no admin key)."""
        name, _ = COOKIES[audience]
        session = self.sessions.find(request.cookies.get(name), audience)
        if session is None and audience == "admin" and self.local_only:
            session, cookie = self.sessions.create("admin", "local")
            return session, cookie
        return session, None

    def set_session_cookie(self, request: Request, response: Response, audience: Audience, value: str) -> None:
        name, path = COOKIES[audience]
        response.set_cookie(name, value, path=path, httponly=True, samesite="strict", secure=_tls(request))

    def clear_session_cookie(self, request: Request, response: Response, audience: Audience) -> None:
        name, path = COOKIES[audience]
        response.delete_cookie(name, path=path, httponly=True, samesite="strict", secure=_tls(request))

    # --- the guard ------------------------------------------------------------------------------------------

    def guard(self, app: ASGIApp, *, loopback_only: bool | None = None) -> ASGIApp:
        """`loopback_only`: whether only this machine may visit (default: when there is no admin key; the
        dashboard passes False, its visitors sign in with their own keys)."""
        local = self.local_only if loopback_only is None else loopback_only

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            root = scope.get("root_path", "")
            if root and not scope["path"].startswith(root):
                # ccm's mounts hand on the path below the prefix; Starlette (and the ASGI spec) want it whole
                scope = {**scope, "path": root + scope["path"]}
            refusal = self._refusal(scope, local)

            async def with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
                await send(message)

            if refusal is not None:
                await PlainTextResponse(refusal, status_code=403)(scope, receive, with_headers)
                return
            await app(scope, receive, with_headers)

        return guarded

    def _refusal(self, scope: Scope, loopback_only: bool) -> str | None:
        headers = _headers(scope)
        host = headers.get("host", "")
        origin = headers.get("origin")
        if loopback_only:
            client = scope.get("client")
            if client is not None and not _loopback_address(client[0]):
                return "without CCM_ADMIN_KEY the admin page answers this machine only"
            if host and not loopback_host(host):
                return "without CCM_ADMIN_KEY the admin page answers this machine only (Host must be loopback)"
            if origin is not None and origin != "null" and not loopback_host(_origin_host(origin)):
                return "requests from other web sites are refused"
        if scope["method"] not in SAFE_METHODS:
            own = f"{scope.get('scheme', 'http')}://{host}"
            if origin is not None and origin != own:
                return "a request that changes something must come from this page (Origin)"
            if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return "a request that changes something must come from this page (Sec-Fetch-Site)"
        return None


# --- helpers ----------------------------------------------------------------------------------------------------


def _headers(scope: Scope) -> Mapping[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _origin_host(origin: str) -> str:
    return origin.partition("://")[2].split("/", 1)[0]


def _loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address in ("testclient", "localhost")  # Starlette's and httpx's in-process test transports


def _tls(request: Request) -> bool:
    return request.url.scheme == "https"


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").partition(";")[0].strip() == "application/x-www-form-urlencoded"


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def read_body(request: Request, limit: int = FORM_LIMIT) -> bytes:
    cached: bytes | None = getattr(request.state, "body", None)
    if cached is not None:
        return cached
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    body = b"".join(chunks)
    request.state.body = body
    return body


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form (the pages post nothing else): the last value of each field."""
    cached: dict[str, str] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    body = await read_body(request)
    fields = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                                         max_num_fields=500))
    request.state.form = fields
    return fields
