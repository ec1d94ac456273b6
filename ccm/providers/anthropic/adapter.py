"""Anthropic passthrough: the client's request goes upstream as it came, and the answer comes back as it went.

The body is forwarded byte for byte (`call.raw`) unless something has to change; then a shallow copy is
re-serialised with only these changes (the client's parsed body is never mutated: fallbacks reuse it):
    - `model` becomes the routed upstream model id;
    - `max_tokens` is clamped to the model's `max_output` (and a thinking budget kept below it);
    - thinking blocks without a signature are removed: they come from another provider's answer in the history,
      and Anthropic rejects them (PROTOCOL §8, pitfall 9). Signed blocks are never touched.

Headers: Anthropic's own (`anthropic-version`, `anthropic-beta`), `user-agent`, `x-app` and `x-stainless-*` are
forwarded; hop-by-hop headers, Host, Content-Length and Accept-Encoding never are. The provider's key replaces the
client's (and `anthropic-beta` loses `oauth-2025-04-20`, which only goes with a subscription's bearer). A provider
with no key of its own (none declared, or `key env(…) or client` while the variable is unset) forwards the client's
own `x-api-key` / `authorization` untouched (an Anthropic key, or a Claude subscription's OAuth bearer with its betas);
a request with neither gets a configuration error. The core has already taken out the header that carried ccm's own
inbound key (`x-ccm-key`, or x-api-key/Bearer holding it) and the `ccm-local` placeholder. No other adapter forwards
the client's credentials.

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

from ccm.errors import UpstreamError, config_error
from ccm.providers.anthropic.reply import UsageScanner, first_frame, is_frame, raise_if_error_frame
from ccm.providers.anthropic.request import passthrough_body
from ccm.providers.base import CLIENT_AUTH, Call, Reply, Usage
from ccm.providers.reply import ended_early, read_all
from ccm.table import PLACEHOLDER_KEY, EnvRef, Provider
from ccm.upstream.client import Endpoint, PooledClient, iter_body, open_response
from ccm.upstream.errors import transport_error, truncated_error
from ccm.usage import from_anthropic

ANTHROPIC_VERSION = "2023-06-01"
FORWARDED = frozenset({"anthropic-version", "anthropic-beta", "user-agent", "x-app"})
PLACEHOLDERS = frozenset({PLACEHOLDER_KEY, f"Bearer {PLACEHOLDER_KEY}"})  # `ccm env`'s stand-in: nobody's key
OAUTH_BETA = "oauth-2025-04-20"  # the beta a Claude subscription's OAuth bearer is sent with


class AnthropicAdapter:
    def __init__(self, provider: Provider, endpoint: Endpoint, client: PooledClient) -> None:
        self._endpoint = endpoint
        self._client = client
        self._messages_url = f"{endpoint.url}/v1/messages"
        self._count_url = f"{endpoint.url}/v1/messages/count_tokens"
        self._own_headers = frozenset(name for name, _ in endpoint.headers)
        # Without a key of its own (none declared, or `key env(…) or client` while the variable is unset), the
        # client's own credentials are what Anthropic gets: an API key, or a Claude subscription's OAuth bearer.
        # (An unset key without `or client` is not that: the endpoint says it is missing, and the call fails so.)
        self._pass_client_auth = endpoint.missing is None and not any(name in CLIENT_AUTH for name in self._own_headers)
        self._provider = provider

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
        pass_client_auth = self._pass_client_auth
        client_auth = False
        for name, value in call.headers.items():
            if name in own:
                continue
            if name in FORWARDED or name.startswith("x-stainless-"):
                if name == "anthropic-beta" and not pass_client_auth and OAUTH_BETA in value:
                    value = _without_oauth_beta(value)  # the provider's own key is not an OAuth token
                headers.append((name, value))
            elif pass_client_auth and name in CLIENT_AUTH and value not in PLACEHOLDERS:
                headers.append((name, value))
                client_auth = True
        if pass_client_auth and not client_auth:
            raise _no_credentials_error(self._provider)
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


def _no_credentials_error(provider: Provider) -> UpstreamError:
    """What a request gets when neither ccm nor the client has an Anthropic credential for this provider."""
    if isinstance(provider.key, EnvRef):
        missing = f"environment variable {provider.key.name} is not set where ccm runs"
    else:
        missing = "it declares no key"
    return config_error(provider.name, f"provider {provider.name!r} has no Anthropic credentials: {missing}, and the "
                        "request carries none of its own (log in to Claude Code, or give it ANTHROPIC_API_KEY)")


def _without_oauth_beta(value: str) -> str:
    return ",".join(beta for beta in value.split(",") if beta.strip() != OAUTH_BETA)


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip() == "application/json"
