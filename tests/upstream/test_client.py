"""The shared HTTP edge: endpoints resolved from the environment, upstream errors mapped once, bodies decoded."""

from __future__ import annotations

import gzip

import anyio
import httpx
import orjson
import pytest

from ccm.errors import UpstreamError
from ccm.table import EnvRef, Literal_, Provider, Timeouts
from ccm.upstream.client import iter_body, open_response, read_body, resolve_endpoint
from ccm.upstream.errors import Redactor, located, upstream_error
from tests.fakes.clients import mock_client


def provider(**extra: object) -> Provider:
    fields = {"name": "up", "type": "openai", "url": Literal_(value="http://up.test/v1/"), "auth": "bearer"}
    return Provider(**{**fields, **extra})  # type: ignore[arg-type]


def test_endpoint_resolves_url_key_and_headers_without_keeping_the_environment() -> None:
    endpoint = resolve_endpoint(
        provider(key=EnvRef(name="UP_KEY"), headers=(("X-Title", EnvRef(name="TITLE", default="ccm")),)),
        {"UP_KEY": "sk-secret"},
    )
    assert endpoint.url == "http://up.test/v1"
    assert endpoint.headers == (("authorization", "Bearer sk-secret"), ("x-title", "ccm"))
    assert endpoint.missing is None


def test_an_unset_key_is_named_on_use_never_valued() -> None:
    endpoint = resolve_endpoint(provider(key=EnvRef(name="UP_KEY")), {})
    with pytest.raises(UpstreamError) as raised:
        endpoint.check()
    assert "UP_KEY" in raised.value.message and raised.value.reason == "config"
    assert ("x-should-retry", "false") in raised.value.headers  # the SDK would otherwise retry the 500


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, b'{"error":{"message":"slow down","type":"rate_limit"}}', (429, "rate_limit_error", "429", "slow down")),
        (503, b'{"error":{"code":503,"message":"busy","status":"UNAVAILABLE"}}',
         (529, "overloaded_error", "5xx", "busy")),
        (529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
         (529, "overloaded_error", "529", "Overloaded")),
        (500, b"<html>oops</html>", (500, "api_error", "5xx", "<html>oops</html>")),
        (400, b'{"error":{"message":"bad field"}}', (400, "invalid_request_error", "4xx", "bad field")),
        (401, b"", (401, "authentication_error", "4xx", "upstream returned HTTP 401")),
    ],
)
def test_upstream_errors_become_anthropic_errors(status: int, body: bytes, expected: tuple[int, str, str, str]) -> None:
    error = upstream_error("up", status, body, {"retry-after": "3"})
    assert (error.status, error.error_type, error.reason, error.message) == expected
    assert orjson.loads(error.body())["error"]["type"] == expected[1]


async def test_a_compressed_upstream_body_is_decoded() -> None:
    payload = b'{"id":"chatcmpl-1"}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, content=gzip.compress(payload))

    async with mock_client(handler) as client:
        endpoint = resolve_endpoint(provider(), {})
        response = await open_response(client, endpoint, "http://up.test/v1/chat/completions", b"{}", [])
        assert await read_body(response, Timeouts()) == payload


async def test_a_stalled_stream_is_a_timeout() -> None:
    class Stalled(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[override]
            yield b"data: 1\n\n"
            await anyio.sleep(5)
            yield b"never"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Stalled())

    async with mock_client(handler) as client:
        response = await open_response(client, resolve_endpoint(provider(), {}), "http://up.test/v1/x", b"{}", [])
        chunks = iter_body(response, Timeouts(first_byte=1.0, idle=0.05))
        assert await chunks.__anext__() == b"data: 1\n\n"
        with pytest.raises(UpstreamError) as raised:
            await chunks.__anext__()
        assert raised.value.reason == "timeout" and raised.value.status == 504


def test_the_upstream_boundary_names_the_provider_and_redacts_every_secret() -> None:
    redactor = Redactor(["sk-ant-provider-key-1", "ccm-inbound-key-9", "short"])
    echoed = UpstreamError(400, "bad header x-api-key: sk-ant-provider-key-1 (from ccm-inbound-key-9) short", "4xx")
    error = located(echoed, "anthropic", redactor)
    assert error.provider == "anthropic" and error.status == 400 and error.reason == "4xx"
    assert "sk-ant" not in error.message and "ccm-inbound" not in error.message
    assert error.message.count("[redacted]") == 2 and "short" in error.message  # short strings are not secrets
    assert echoed.provider == "" and "sk-ant" in echoed.message  # the original is not changed
    transport = located(httpx.ConnectError("refused"), "openai", redactor)
    assert (transport.provider, transport.reason, transport.status) == ("openai", "connect", 502)
