"""ccm's own upstream client over a fake transport: the path that serves, with `httpx.MockTransport` underneath."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ccm.upstream.client import PooledClient

LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=16, keepalive_expiry=60)


def mock_client(handler: Callable[[httpx.Request], httpx.Response] | httpx.AsyncBaseTransport) -> PooledClient:
    """A `PooledClient` whose transport is `handler` (a `MockTransport` handler, or any transport)."""
    transport = handler if isinstance(handler, httpx.AsyncBaseTransport) else httpx.MockTransport(handler)
    return PooledClient(LIMITS, transport)
