"""The HTTP edge shared by every adapter: resolved endpoints, pooled clients, and the one place where transport
exceptions and upstream error responses become `UpstreamError`s."""

from __future__ import annotations

import functools
import logging
import urllib.request
from collections.abc import AsyncGenerator, Mapping

import anyio
import httpx

from ccm.errors import config_error
from ccm.frozen import frozen
from ccm.table import PLACEHOLDER_KEY, EnvRef, FileRef, Provider, Timeouts, Value, resolve
from ccm.upstream import http1
from ccm.upstream.errors import timed_out, transport_error, upstream_error
from ccm.upstream.http1 import IDLE_TIMEOUT, TIMED_READS

log = logging.getLogger("ccm.providers")


@frozen
class Endpoint:
    """A provider's settings resolved against the environment once per table: base URL (no trailing slash),
    the headers every call carries (auth included), timeouts, and what the first value that resolved to nothing is
    missing, in words (`unset`), if any (a key declared `or client` is not missing while unset: the client's own
    credentials stand in)."""

    provider: str
    url: str
    headers: tuple[tuple[str, str], ...]
    timeouts: Timeouts
    missing: str | None = None

    def check(self) -> None:
        if self.missing:
            raise config_error(
                self.provider,
                f"provider {self.provider!r} is not configured: {self.missing}",
            )


def resolve_endpoint(provider: Provider, environ: Mapping[str, str]) -> Endpoint:
    missing: str | None = None

    def value(v: Value | None) -> str | None:
        nonlocal missing
        found = resolve(v, environ)
        if found is None and missing is None:
            missing = unset(v)
        return found

    url = (value(provider.url) or "").rstrip("/")
    key = resolve(provider.key, environ)
    if key == PLACEHOLDER_KEY:  # what `ccm env` gave Claude Code, found in the shell ccm runs in: nobody's key
        key = None
    if key is None and not provider.key_or_client and missing is None:
        missing = unset(provider.key)
    headers: list[tuple[str, str]] = []
    if key:
        if provider.auth == "bearer":
            headers.append(("authorization", f"Bearer {key}"))
        else:
            headers.append((provider.auth, key))
    for name, v in provider.headers:
        found = value(v)
        if found is not None:
            headers.append((name.lower(), found))
    return Endpoint(provider.name, url, tuple(headers), provider.timeouts, missing)


def unset(value: Value | None) -> str | None:
    """What a value that resolved to nothing is missing, in words: `environment variable NAME is not set`, `file
    PATH cannot be read`; None for a value that was never to come from anywhere (no value, a literal)."""
    if isinstance(value, EnvRef):
        return f"environment variable {value.name} is not set"
    if isinstance(value, FileRef):
        return f"file {value.path} cannot be read (or is empty)"
    return None


class PooledClient(httpx.AsyncClient):
    """The client `make_client` builds. With a `direct` transport (no proxy named in the environment) every URL
    goes through it, and `open_response` hands requests to it itself, skipping the client's send layers (auth,
    redirects, cookies, event hooks: ccm uses none of them; ~100 µs a request). Without one, the client is httpx's
    own, which routes each URL through the proxy the environment names for it (HTTPS_PROXY, HTTP_PROXY,
    ALL_PROXY, NO_PROXY): httpx honours those only when no transport is given. It trusts the same CA store as
    ccm's transport. `default_headers` are the client's own (accept, accept-encoding, user-agent…), which a
    request's headers override by name.

    Tests put their fake transport (`httpx.MockTransport`) in `direct`, so they run the path that serves."""

    def __init__(self, limits: httpx.Limits, direct: httpx.AsyncBaseTransport | None) -> None:
        if direct is None:
            super().__init__(timeout=None, limits=limits, follow_redirects=False, verify=http1.tls_context())
        else:
            super().__init__(timeout=None, limits=limits, transport=direct, follow_redirects=False)
        self.direct = direct
        self.default_headers = tuple(self.headers.multi_items())


def make_client(provider: Provider) -> PooledClient:
    """One pooled client per provider, on ccm's own HTTP/1.1 transport (`ccm.upstream.http1`: httpx's own
    transport costs over 1 ms per request and collapses under concurrency) unless the environment names a proxy.
    Timeouts are per request (`open_response`), so none is set here."""
    limit = provider.max_concurrency or 256
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=min(limit, 64), keepalive_expiry=60)
    if any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies()):
        try:
            return PooledClient(limits, None)
        except ValueError as exc:  # a proxy URL httpx cannot use (an unknown scheme…): said once, not a traceback
            log.warning("provider %r connects directly: the proxy named in the environment cannot be used (%s)",
                        provider.name, exc)
    return PooledClient(limits, http1.Http1Transport(limits))


async def open_response(
    client: PooledClient,
    endpoint: Endpoint,
    url: str,
    content: bytes,
    headers: list[tuple[str, str]],
) -> httpx.Response:
    """POST and wait for the response headers. A non-2xx answer is read and raised as an `UpstreamError`;
    a 2xx response is returned unread (the caller streams or reads it and must close it)."""
    endpoint.check()
    t = endpoint.timeouts
    timeout = {"connect": t.connect, "read": t.first_byte, "write": t.first_byte, "pool": t.connect}
    # a transport that times its own reads takes the idle timeout from IDLE_TIMEOUT
    extensions: dict[str, object] = {"timeout": timeout, IDLE_TIMEOUT: t.idle}
    direct = client.direct
    try:
        if direct is not None:
            own = [*endpoint.headers, *headers]
            named = {name for name, _ in own}
            defaults = [(name, value) for name, value in client.default_headers if name not in named]
            request = httpx.Request(
                "POST", _parsed_url(url), content=content, headers=[*defaults, *own], extensions=extensions
            )
            response = await direct.handle_async_request(request)
        else:
            # httpx's own transport applies `read` to every socket read, the body's included, whose gaps may last
            # up to `idle`: the wait for the head is bounded here instead (iter_body times each chunk on this path)
            timeouts = {**timeout, "read": max(t.first_byte, t.idle)}
            request = client.build_request(
                "POST", _parsed_url(url), content=content, headers=[*endpoint.headers, *headers],
                extensions={**extensions, "timeout": timeouts},
            )
            with anyio.fail_after(t.first_byte):
                response = await client.send(request, stream=True)
    except Exception as exc:  # noqa: BLE001 - every transport failure is classified here, once
        raise transport_error(endpoint.provider, exc) from exc
    if response.status_code >= 400:
        try:
            body = await response.aread()
        except Exception as exc:  # noqa: BLE001
            raise transport_error(endpoint.provider, exc) from exc
        finally:
            await response.aclose()
        raise upstream_error(endpoint.provider, response.status_code, body, response.headers)
    return response


@functools.lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    """`url` parsed once: httpx takes ~15 µs to parse one, and an adapter's upstream URLs are few and the same on
    every request. Bounded, because a direct `provider/anything` pick puts any model name in a Gemini URL."""
    return httpx.URL(url)


async def iter_body(response: httpx.Response, timeouts: Timeouts) -> AsyncGenerator[bytes, None]:
    """The response body as it arrives, decoded if the upstream compressed it (httpx asks for gzip by default; the
    passthrough asks for identity, so its bytes stay the upstream's own), with the first-byte and idle timeouts
    enforced: by the transport's own socket timer when it says it keeps them (`TIMED_READS`: no cancel scope per
    chunk, ~15 µs each), else per chunk here (any other transport, e.g. a test's `httpx.MockTransport`)."""
    if response.extensions.get(TIMED_READS):
        wait = timeouts.first_byte
        try:
            async for chunk in response.aiter_bytes():
                wait = timeouts.idle
                if chunk:
                    yield chunk
        except httpx.ReadTimeout as exc:
            raise timed_out("", f"upstream stalled for {wait:g}s") from exc
        except Exception as exc:  # noqa: BLE001
            raise transport_error("", exc) from exc
        return
    chunks = response.aiter_bytes().__aiter__()
    wait = timeouts.first_byte
    while True:
        try:
            with anyio.fail_after(wait):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise timed_out("", f"upstream stalled for {wait:g}s") from exc
        except Exception as exc:  # noqa: BLE001
            raise transport_error("", exc) from exc
        wait = timeouts.idle
        if chunk:
            yield chunk


async def read_body(response: httpx.Response, timeouts: Timeouts) -> bytes:
    parts = [chunk async for chunk in iter_body(response, timeouts)]
    return b"".join(parts)


