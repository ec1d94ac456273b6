"""Anthropic passthrough: the client's request goes upstream as it came, and the answer comes back as it went.

The body is forwarded byte for byte (`call.raw`) unless something has to change; then a shallow copy is
re-serialised with only these changes (the client's parsed body is never mutated: fallbacks reuse it):
    - `model` becomes the routed upstream model id;
    - `max_tokens` is clamped to the model's `max_output` (and a thinking budget kept below it);
    - thinking blocks without a signature are removed: they come from another provider's answer in the history,
      and Anthropic rejects them (PROTOCOL §8, pitfall 9). Signed blocks are never touched.

Headers: Anthropic's own (`anthropic-version`, `anthropic-beta`), `user-agent`, `x-app` and `x-stainless-*` are
forwarded; hop-by-hop headers, Host, Content-Length and Accept-Encoding never are. The provider's key replaces the
client's. A provider that declares no key forwards the client's own `x-api-key` / `authorization` (a Claude
subscription passing through); the core drops those from `call.headers` when ccm's own inbound auth is on.

Streams are relayed as the upstream's bytes, unchanged. Usage is read on the side from the `message_start` and
`message_delta` frames only (the other frames are not parsed). A stream whose first event is an `error` (Anthropic
sends `overloaded_error` that way) is raised as an `UpstreamError` before the client sees a 200, so the core can
fall back or answer with a real status. A stream that ends before `message_stop` (or an `event: error`, relayed as
it came) was cut short: raised with reason `truncated`, from `send` when not even its first event arrived, else from
the stream once its bytes are relayed. A non-stream body whose JSON stops before its end is raised the same way; one
that is not JSON at all is relayed as it came.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio
import httpx
import orjson

from ccm.errors import UpstreamError
from ccm.providers.anthropic.reply import UsageScanner, first_frame, is_frame, raise_if_error_frame
from ccm.providers.anthropic.request import passthrough_body
from ccm.providers.base import CLIENT_AUTH, Call, Reply, Usage
from ccm.providers.reply import ended_early, read_all, truncated_error
from ccm.table import Provider
from ccm.upstream.client import Endpoint, PooledClient, iter_body, open_response
from ccm.upstream.errors import transport_error
from ccm.usage import from_anthropic

ANTHROPIC_VERSION = "2023-06-01"
FORWARDED = frozenset({"anthropic-version", "anthropic-beta", "user-agent", "x-app"})


class AnthropicAdapter:
    def __init__(self, provider: Provider, endpoint: Endpoint, client: PooledClient) -> None:
        self._endpoint = endpoint
        self._client = client
        self._messages_url = f"{endpoint.url}/v1/messages"
        self._count_url = f"{endpoint.url}/v1/messages/count_tokens"
        self._own_headers = frozenset(name for name, _ in endpoint.headers)
        # Without a declared key, the client's own credentials are what Anthropic gets.
        self._pass_client_auth = provider.key is None

    async def send(self, call: Call) -> Reply:
        response = await open_response(
            self._client, self._endpoint, self._messages_url, passthrough_body(call), self._headers(call)
        )
        if call.stream and not _is_json(response):  # a gateway that ignored `stream` answers JSON: relayed as such
            return await self._stream_reply(response)
        body = await read_all(self._endpoint.provider, response, self._endpoint.timeouts)
        usage = Usage()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if ended_early(body, exc):
                raise truncated_error(self._endpoint.provider, "its JSON body stops before the end") from None
            parsed = None  # not JSON at all: relayed as it came, usage unknown
        if isinstance(parsed, dict):
            if isinstance(parsed.get("usage"), dict):
                usage.take(from_anthropic(parsed["usage"]))
            usage.final = True  # a whole document: nothing more will come
        return Reply(response.status_code, self._reply_headers(response, "application/json"), body=body, usage=usage)

    async def count_tokens(self, call: Call) -> Reply:
        """Forward a count_tokens request (body rewritten like a message, minus max_tokens) for an exact count."""
        response = await open_response(
            self._client, self._endpoint, self._count_url, passthrough_body(call), self._headers(call)
        )
        body = await read_all(self._endpoint.provider, response, self._endpoint.timeouts)
        return Reply(response.status_code, self._reply_headers(response, "application/json"), body=body)

    async def aclose(self) -> None:
        return None  # the pooled client is the runtime's to close

    def _headers(self, call: Call) -> list[tuple[str, str]]:
        # identity: the upstream's bytes are relayed as they are, so they must not arrive compressed
        headers = [("content-type", "application/json"), ("accept-encoding", "identity")]
        own = self._own_headers
        for name, value in call.headers.items():
            if name in own:
                continue
            if name in FORWARDED or name.startswith("x-stainless-") or (self._pass_client_auth and name in CLIENT_AUTH):
                headers.append((name, value))
        if "anthropic-version" not in call.headers and "anthropic-version" not in own:
            headers.append(("anthropic-version", ANTHROPIC_VERSION))
        return headers

    def _reply_headers(self, response: httpx.Response, default_type: str) -> list[tuple[str, str]]:
        headers = [("content-type", response.headers.get("content-type", default_type))]
        request_id = response.headers.get("request-id")
        if request_id:
            headers.append(("request-id", request_id))
        return headers

    async def _stream_reply(self, response: httpx.Response) -> Reply:
        chunks = iter_body(response, self._endpoint.timeouts)
        provider = self._endpoint.provider
        usage = Usage()
        scanner = UsageScanner(usage)
        try:
            first = await first_frame(chunks)
            raise_if_error_frame(first, provider)
            scanner.feed(first)
            if not is_frame(first):  # the body ended before its first whole event
                scanner.flush()
                if not scanner.ended:
                    raise truncated_error(provider, "the stream ended before its first event")
        except BaseException as exc:
            with anyio.CancelScope(shield=True):  # close the upstream even when the client's request is cancelled
                await chunks.aclose()
                await response.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, UpstreamError):
                raise transport_error(provider, exc) from exc
            raise

        async def relay() -> AsyncGenerator[bytes, None]:
            if first:
                yield first
            async for chunk in chunks:
                scanner.feed(chunk)
                yield chunk
            scanner.flush()
            if not scanner.ended:  # relayed so far, but never shown as finished: the core writes `event: error`
                raise truncated_error(provider, "the stream ended before message_stop")

        stream = relay()

        async def aclose() -> None:
            with anyio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                    await chunks.aclose()
                finally:
                    await response.aclose()

        headers = self._reply_headers(response, "text/event-stream")
        return Reply(response.status_code, headers, stream=stream, usage=usage, aclose=aclose)


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip() == "application/json"
