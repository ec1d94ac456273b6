"""Who may use the pages: sessions, the CSRF token, sign-in throttling. One module for the admin page and (with the
ledger) the dashboard, so both get the same rules.

    Sessions(secret)                 the signed-in sessions of this process, in memory
      .create(audience, subject)     a new session (after a good sign-in) -> Session
      .find(cookie, audience)        the session a cookie names, if it is valid, current and of that audience
      .end(session)                  sign out
      .end_subject(audience, subject) sign out every session of one subject (a key revoked or rotated)
    csrf_token(secret, binding)      the CSRF token bound to a session id (or, before sign-in, to the sign-in nonce)
    csrf_valid(secret, binding, t)   whether `t` is that token
    Throttle                         failed sign-ins per client address and overall: a wait once there are too many
    same_key(presented, key)         a constant-time comparison of a presented key

A cookie holds `id.signature`: the id is 32 random bytes, the signature an HMAC-SHA256 of the id and its audience
under a secret made at start (never written anywhere), so a forged or altered cookie is refused before any lookup,
and a session id of one audience is worthless as the other's. The key a person signed in with is never kept, in the
cookie or in memory: a session knows only its audience and subject (`admin`, `local`; for a key holder, the key's id).

Audiences are kept apart: `admin` (cookie `ccm_admin`, path `/admin`) and `key` (cookie `ccm_key`, path `/`, the
dashboard's key holders). A session is found only through its own audience's cookie and only if it was made for it.

CSRF is the HMAC "synchronizer token" pattern without server state: the token is an HMAC of the session id, sent in
every form (`csrf` field) and every script request (`X-CSRF-Token`); a request that changes state without it is
refused (`ccm.web.site`). Before sign-in there is no session: the sign-in form is bound to a random nonce in a
short-lived cookie instead (the same token function, another binding), so a page elsewhere cannot sign a browser in.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Audience = Literal["admin", "key"]

COOKIES: dict[Audience, tuple[str, str]] = {"admin": ("ccm_admin", "/admin"), "key": ("ccm_key", "/")}
SIGNIN_COOKIE = "ccm_signin"  # the sign-in form's nonce (see module docstring)
SIGNIN_COOKIE_SECONDS = 30 * 60

IDLE_SECONDS = 8 * 3600  # a session unused this long is over
MAX_AGE_SECONDS = 24 * 3600  # and any session after this long
MAX_SESSIONS = 1_000  # per audience: beyond this the least recently used go (sign-ins are throttled, so this is slow)


@dataclass(slots=True)
class Session:
    id: str
    audience: Audience
    subject: str  # `admin` (signed in with CCM_ADMIN_KEY), `local` (loopback, no admin key); a key holder: key id
    created: float
    seen: float
    secret: bytes = field(repr=False)

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret, self.id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(secret: bytes, audience: str, value: str) -> str:
    return _b64(hmac.new(secret, f"{audience}\0{value}".encode(), hashlib.sha256).digest())


def csrf_token(secret: bytes, binding: str) -> str:
    return _sign(secret, "csrf", binding)


def csrf_valid(secret: bytes, binding: str, presented: str | None) -> bool:
    if not presented or not binding:
        return False
    return hmac.compare_digest(csrf_token(secret, binding).encode(), presented.encode("utf-8", "replace"))


def same_key(presented: str, key: str) -> bool:
    """Compared as digests, so neither the length nor the content of the key shows in the time taken."""
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(key.encode()).digest())


def new_nonce() -> str:
    return _b64(secrets.token_bytes(24))


class Sessions:
    def __init__(self, secret: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self._clock = clock
        self._by_id: dict[Audience, collections.OrderedDict[str, Session]] = {
            "admin": collections.OrderedDict(), "key": collections.OrderedDict(),
        }

    def create(self, audience: Audience, subject: str) -> tuple[Session, str]:
        """A new session and the cookie value that names it."""
        now = self._clock()
        session = Session(_b64(secrets.token_bytes(32)), audience, subject, now, now, self.secret)
        sessions = self._by_id[audience]
        sessions[session.id] = session
        while len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)
        return session, f"{session.id}.{_sign(self.secret, audience, session.id)}"

    def find(self, cookie: str | None, audience: Audience) -> Session | None:
        if not cookie:
            return None
        session_id, _, signature = cookie.partition(".")
        if not hmac.compare_digest(_sign(self.secret, audience, session_id).encode(), signature.encode()):
            return None
        sessions = self._by_id[audience]
        session = sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > IDLE_SECONDS or now - session.created > MAX_AGE_SECONDS:
            del sessions[session_id]
            return None
        session.seen = now
        sessions.move_to_end(session_id)
        return session

    def end(self, session: Session) -> None:
        self._by_id[session.audience].pop(session.id, None)

    def end_subject(self, audience: Audience, subject: str) -> int:
        """Sign out every session of `subject` (a key revoked or rotated: whoever signed in with it is out)."""
        sessions = self._by_id[audience]
        ended = [i for i, s in sessions.items() if s.subject == subject]
        for session_id in ended:
            del sessions[session_id]
        return len(ended)

    def count(self, audience: Audience) -> int:
        return len(self._by_id[audience])


class Throttle:
    """Failed sign-ins: each client address may fail `per_client` times in `window` seconds, and all clients together
    `overall` times (a guesser spread over many addresses); past that, sign-ins wait. A good sign-in clears its
    address. `retry_after(address)` is 0 when a sign-in may be tried now, else the seconds to wait."""

    def __init__(self, per_client: int = 5, overall: int = 50, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque()

    def retry_after(self, address: str) -> float:
        now = self._clock()
        self._expire(now)
        waits = []
        mine = self._failures.get(address)
        if mine is not None and len(mine) >= self.per_client:
            waits.append(mine[0] + self.window - now)
        if len(self._all) >= self.overall:
            waits.append(self._all[0] + self.window - now)
        return max(waits, default=0.0)

    def failed(self, address: str) -> None:
        now = self._clock()
        self._failures.setdefault(address, collections.deque()).append(now)
        self._all.append(now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for address in [a for a, times in self._failures.items() if not times or times[-1] <= horizon]:
            del self._failures[address]
        for times in self._failures.values():
            while times and times[0] <= horizon:
                times.popleft()
