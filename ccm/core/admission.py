"""Admission: who a request comes from, and whether it may come in at all — before anything is routed.

    authenticate(runtime, headers) -> Caller     with inbound keys declared: one of them, or 401
    same_machine(headers, method)                without: the request must come from this machine, not a web page
    presents(headers, keys)                      whether the request carries one of `keys` (x-api-key or Bearer)
    admit_page(scope, headers, admin_key)        the pages beside the API (/metrics): the admin key, else this machine

(The ledger's keys, holds, credits and rate limits join here: 401 / 402 / 429 before `select_route`.)
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from ccm.core.record import INBOUND, Caller
from ccm.core.runtime import Runtime
from ccm.core.types import Scope
from ccm.errors import ApiError


def presents(headers: Mapping[str, str], keys: tuple[bytes, ...]) -> bool:
    """Whether the request carries one of `keys` as `x-api-key` or `Authorization: Bearer`."""
    presented = headers.get("x-api-key")
    if presented is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
    if not presented:
        return False
    candidate = presented.encode()
    # compare against every key so the time taken does not say which one came close
    matched = [hmac.compare_digest(candidate, key) for key in keys]
    return any(matched)


def authenticate(runtime: Runtime, headers: Mapping[str, str]) -> Caller:
    if presents(headers, runtime.auth_keys):
        return INBOUND
    raise ApiError(401, "invalid x-api-key", "authentication_error")


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
