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
fall back or answer with a real status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import httpx
import orjson

from ccm.errors import UpstreamError
from ccm.providers.base import CLIENT_AUTH, Call, Reply, Usage
from ccm.providers.http import Endpoint, iter_body, open_response, transport_error
from ccm.providers.reply import read_all
from ccm.table import Provider

ANTHROPIC_VERSION = "2023-06-01"
FORWARDED = frozenset({"anthropic-version", "anthropic-beta", "user-agent", "x-app"})
# An `error` frame at the very start of a stream, by its Anthropic error type: (status, failure reason).
STREAM_START_ERRORS: dict[str, tuple[int, Any]] = {
    "overloaded_error": (529, "529"),
    "rate_limit_error": (429, "429"),
    "api_error": (500, "5xx"),
    "timeout_error": (504, "timeout"),
}


class AnthropicAdapter:
    def __init__(self, provider: Provider, endpoint: Endpoint, client: httpx.AsyncClient) -> None:
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
        if call.stream:
            return await self._stream_reply(response)
        body = await read_all(self._endpoint.provider, response, self._endpoint.timeouts)
        usage = Usage()
        try:
            parsed = orjson.loads(body)
            if isinstance(parsed, dict) and isinstance(parsed.get("usage"), dict):
                _read_usage(parsed["usage"], usage)
        except orjson.JSONDecodeError:
            pass  # relayed as it came; usage stays zero
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
            if name in FORWARDED or name.startswith("x-stainless-"):
                headers.append((name, value))
            elif self._pass_client_auth and name in CLIENT_AUTH:
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
        try:
            first = await _first_frame(chunks)
            _raise_if_error_frame(first, self._endpoint.provider)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):  # close the upstream even when the client's request is cancelled
                await chunks.aclose()
                await response.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, UpstreamError):
                raise transport_error(self._endpoint.provider, exc) from exc
            raise
        usage = Usage()
        scanner = UsageScanner(usage)
        scanner.feed(first)

        async def relay() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for chunk in chunks:
                scanner.feed(chunk)
                yield chunk

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


def passthrough_body(call: Call) -> bytes:
    """`call.raw` when the upstream can take it as is; otherwise the minimal rewrite, serialised once."""
    body = call.body
    model = call.model
    changes: dict[str, Any] = {}
    if body.get("model") != model.model:
        changes["model"] = model.model
    max_tokens = body.get("max_tokens")
    if model.max_output is not None and isinstance(max_tokens, int) and max_tokens > model.max_output:
        changes["max_tokens"] = model.max_output
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int):
            if thinking["budget_tokens"] >= model.max_output:
                changes["thinking"] = {**thinking, "budget_tokens": model.max_output - 1}
    messages = _without_unsigned_thinking(body.get("messages"))
    if messages is not None:
        changes["messages"] = messages
    if not changes and call.raw is not None:
        return call.raw
    return orjson.dumps({**body, **changes} if changes else body)


def _without_unsigned_thinking(messages: Any) -> list[Any] | None:
    """The messages with unsigned thinking blocks removed, or None when there are none (the common case)."""
    if not isinstance(messages, list):
        return None
    rewritten: list[Any] | None = None
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not any(_unsigned_thinking(block) for block in content):
            if rewritten is not None:
                rewritten.append(message)
            continue
        if rewritten is None:
            rewritten = list(messages[:index])
        kept = [block for block in content if not _unsigned_thinking(block)]
        if kept:  # a turn that held nothing else disappears; Anthropic merges the neighbours it leaves
            rewritten.append({**message, "content": kept})
    return rewritten


def _unsigned_thinking(block: Any) -> bool:
    """A thinking block Anthropic did not sign: none or an empty signature (OpenAI-compatible history), or one ccm
    minted to carry another provider's state (`ccm.gemini.…`). Anthropic rejects both with a 400."""
    if not isinstance(block, dict) or block.get("type") != "thinking":
        return False
    signature = block.get("signature")
    return not signature or (isinstance(signature, str) and signature.startswith("ccm."))


async def _first_frame(chunks: AsyncIterator[bytes]) -> bytes:
    """Read until the first complete SSE frame (or the end): that is the reply being primed."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\n\n" in buffer or b"\r\n\r\n" in buffer:
            break
    return buffer


def _raise_if_error_frame(first: bytes, provider: str) -> None:
    if not first.lstrip().startswith(b"event: error"):
        return
    _, _, data = first.partition(b"data:")
    try:
        error = orjson.loads(data.split(b"\n", 1)[0]).get("error", {})
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    error_type = error.get("type", "api_error") if isinstance(error, dict) else "api_error"
    message = error.get("message", "upstream stream failed") if isinstance(error, dict) else "upstream stream failed"
    status, reason = STREAM_START_ERRORS.get(error_type, (500, "5xx"))
    raise UpstreamError(status, str(message), reason, provider, error_type)


class UsageScanner:
    """Reads usage from `message_start` / `message_delta` data lines as the stream passes; other lines are only
    searched for those names (a C-speed `in`), never parsed."""

    __slots__ = ("_tail", "usage")

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        if b"message_start" not in data and b"message_delta" not in data:
            self._tail = data[data.rfind(b"\n") + 1 :]
            return
        lines = data.split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if line.startswith(b"data:") and (b'"message_start"' in line or b'"message_delta"' in line):
                self._read(line[5:])

    def _read(self, data: bytes) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            usage = event["message"].get("usage")
        else:
            usage = event.get("usage")
        if isinstance(usage, dict):
            _read_usage(usage, self.usage)


def _read_usage(source: Mapping[str, Any], usage: Usage) -> None:
    """Anthropic usage fields present in `source` overwrite the running values (message_delta is cumulative)."""
    for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        value = source.get(name)
        if isinstance(value, int):
            setattr(usage, name, value)
