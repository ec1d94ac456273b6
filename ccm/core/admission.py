"""Admission: who a request comes from, and whether it may come in at all — before anything is routed.

    identify(runtime, headers, metering) -> (Caller, carrier)
                                                 who sends the request: one of the file's inbound keys, an issued
                                                 key (`Metering.identify`), or nobody in particular (the local
                                                 caller, when no key is required); 401 otherwise. `carrier` is the
                                                 header that held ccm's own credential (`x-ccm-key`, else x-api-key
                                                 or Bearer), or the `ccm-local` placeholder: it never goes upstream
    same_machine(headers, method)                with no key required, the request must come from this machine,
                                                 not a web page
    presents(headers, keys)                      whether the request carries one of `keys` (x-api-key or Bearer)
    admit_page(scope, headers, admin_key)        the pages beside the API (/metrics): the admin key, else this machine

Holds, credits and rate limits (402 / 429) follow once the request is routed: `ccm.core.metering`.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Mapping

from ccm.core.metering import Metering
from ccm.core.record import INBOUND, LOCAL, Caller
from ccm.core.runtime import Runtime
from ccm.core.types import Scope
from ccm.errors import ApiError
from ccm.table import CCM_KEY_HEADER, PLACEHOLDER_KEY


def credential(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The secret a request presents to ccm, and the header it came in: `x-ccm-key` (where `ccm env` puts ccm's
    own key, so x-api-key and Authorization stay the client's own), else `x-api-key`, else `Authorization: Bearer`."""
    own = headers.get(CCM_KEY_HEADER)
    if own:
        return CCM_KEY_HEADER, own
    presented = headers.get("x-api-key")
    if presented:
        return "x-api-key", presented
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "authorization", token.strip()
    return None


def _one_of(secret: str, keys: tuple[bytes, ...]) -> bool:
    candidate = secret.encode()
    # compare against every key so the time taken does not say which one came close
    matched = [hmac.compare_digest(candidate, key) for key in keys]
    return any(matched)


def presents(headers: Mapping[str, str], keys: tuple[bytes, ...]) -> bool:
    """Whether the request carries one of `keys` as `x-api-key` or `Authorization: Bearer`."""
    found = credential(headers)
    return found is not None and _one_of(found[1], keys)


async def identify(runtime: Runtime, headers: Mapping[str, str],
                   metering: Metering | None) -> tuple[Caller, str | None]:
    found = credential(headers)
    if found is not None:
        carrier, secret = found
        if runtime.auth_keys and _one_of(secret, runtime.auth_keys):
            return INBOUND, carrier
        if secret == PLACEHOLDER_KEY:  # `ccm env`'s stand-in when the user has no credentials: nobody's key
            if runtime.auth_required:
                raise ApiError(401, "invalid x-api-key", "authentication_error")
            return LOCAL, carrier
        if metering is not None:
            caller = await metering.identify(secret)
            if caller is not None:
                return caller, carrier
    if runtime.auth_required:
        raise ApiError(401, "invalid x-api-key", "authentication_error")
    # no key required: whatever the client presented is its own (a Claude login, an Anthropic key), not ccm's
    return LOCAL, None


@functools.lru_cache(maxsize=64)  # a client sends the same Host on every request; parsing an address costs ~5 µs
def loopback_host(value: str) -> bool:
    """`Host` or an Origin's host part: `localhost` or a loopback address, with or without a port."""
    host = value
    if host.startswith("["):  # [::1]:port
        host = host[1: host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_machine(headers: Mapping[str, str], method: str) -> None:
    """With no inbound key required, refuse what a web page could send: a request to a name other than loopback
    (DNS rebinding), one a browser marks as coming from another site (`Origin`, `Sec-Fetch-Site`), and a POST that is
    not JSON (a form or `text/plain` is a "simple" cross-site request, sent without a CORS preflight)."""
    host = headers.get("host")
    if host is not None and not loopback_host(host):
        raise ApiError(403, "ccm answers requests to this machine only (Host must be localhost or a loopback address)",
                       "permission_error")
    origin = headers.get("origin")
    if origin is not None:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not loopback_host(rest.split("/", 1)[0]):
            raise ApiError(403, "requests from web pages are refused (declare an inbound `auth` key to serve them)",
                           "permission_error")
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise ApiError(403, "cross-site requests are refused", "permission_error")
    if method == "POST":
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "the body must be JSON (content-type: application/json)", "invalid_request_error")


def admit_page(scope: Scope, headers: Mapping[str, str], admin_key: bytes | None) -> None:
    """The pages beside the API that show what the router serves (/metrics): with an admin key set, only to a
    request that presents it; without one, only to this machine (a loopback client, and a request a web page
    could not have sent: `same_machine`)."""
    if admin_key is not None:
        if not presents(headers, (admin_key,)):
            raise ApiError(401, "this page needs the admin key (CCM_ADMIN_KEY) as x-api-key or a Bearer token",
                           "authentication_error")
        return
    client = scope.get("client")
    if client is None or not loopback_host(str(client[0])):
        raise ApiError(403, "answered on this machine only (set CCM_ADMIN_KEY to allow others)", "permission_error")
    same_machine(headers, "GET")
