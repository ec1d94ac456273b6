"""The adapter for OpenAI-compatible Chat Completions servers (OpenAI, OpenRouter, DeepSeek, Groq, Ollama, vLLM,
LM Studio…): one upstream attempt per `send`, Anthropic Messages in and out.

The translation is pure and lives beside this module: `openai_translate.translate_request` (request),
`translate_response` here (a complete completion), `openai_stream.StreamTranslator` (a stream). This module only
moves bytes: it POSTs `{url}/chat/completions` through `ccm.providers.http` (the one place transport failures and
error statuses become `UpstreamError`s) and wraps the result in a `Reply`.

A streamed reply is primed: `send` returns only once the first upstream event has produced output, so a failure
before that (an error event, a stream that ends empty, a timeout) is raised from `send` and the core can still
answer with a real status or fall back. Later failures are raised from the reply's iterator. Each upstream event's
output is yielded as soon as it is translated.

The adapter does not own its `httpx.AsyncClient` (the core builds one per provider and closes it), so `aclose`
has nothing to release.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from ccm.errors import UpstreamError
from ccm.providers.base import Call, Reply, Usage
from ccm.providers.http import Endpoint, iter_body, open_response, read_body
from ccm.providers.openai_stream import (
    ReplyContext,
    StreamTranslator,
    embedded_error,
    protocol_error,
    stop_reason,
    usage_from,
    usage_json,
)
from ccm.providers.openai_translate import translate_request
from ccm.providers.tool_json import parse_arguments
from ccm.table import Provider

log = logging.getLogger("ccm.providers.openai")

JSON_HEADERS = [("content-type", "application/json")]
STREAM_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def translate_response(data: Mapping[str, Any], context: ReplyContext) -> tuple[dict[str, Any], Usage]:
    """A complete Chat Completions answer → an Anthropic message (thinking, text, then tool_use blocks) and usage."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise protocol_error(context.provider, "the completion has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):  # content parts (Mistral): keep the text ones
        text = "".join(p["text"] for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
    text = text if isinstance(text, str) and text else message.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        block = _tool_use(call, context)
        if block is not None:
            content.append(block)

    usage = Usage()
    if isinstance(data.get("usage"), dict):
        usage_from(data["usage"], usage)
    finish = choice.get("finish_reason")
    stop_string = context.matched_stop(choice.get("stop_reason"))
    reason = stop_reason(finish if isinstance(finish, str) else None,
                         any(b["type"] == "tool_use" for b in content), stop_string)
    return {
        "id": context.message_id,
        "type": "message",
        "role": "assistant",
        "model": context.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": stop_string if reason == "stop_sequence" else None,
        "usage": usage_json(usage),
    }, usage


def _tool_use(call: Any, context: ReplyContext) -> dict[str, Any] | None:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        log.warning("dropped a tool call without a name from %s", context.provider or "upstream")
        return None
    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        tool_input = arguments
    else:
        text = arguments if isinstance(arguments, str) else ""
        tool_input, outcome = parse_arguments(text)
        if outcome != "valid":
            # The arguments themselves may hold user data: log only their size.
            log.warning("%s malformed arguments of tool %s (%d chars)",
                        "repaired" if outcome == "repaired" else "discarded", name, len(text))
    return {"type": "tool_use", "id": context.tool_id(call.get("id")), "name": context.names.anthropic(name),
            "input": tool_input}


class OpenAIAdapter:
    def __init__(self, provider: Provider, endpoint: Endpoint, client: httpx.AsyncClient) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.client = client
        self.url = f"{endpoint.url}/chat/completions"

    async def send(self, call: Call) -> Reply:
        body, names = translate_request(call.body, call.model)
        stops = call.body.get("stop_sequences")
        context = ReplyContext(
            model=str(call.body.get("model", "")),
            names=names,
            stop_sequences=tuple(s for s in stops if isinstance(s, str)) if isinstance(stops, list) else (),
            provider=self.provider.name,
        )
        accept = "text/event-stream" if call.stream else "application/json"
        response = await open_response(self.client, self.endpoint, self.url, orjson.dumps(body),
                                       [*JSON_HEADERS, ("accept", accept)])
        if call.stream and not _is_json(response):
            return await self._stream(response, context)
        try:
            raw = await read_body(response, self.endpoint.timeouts)
        except UpstreamError as exc:
            raise self._named(exc) from None
        finally:
            await response.aclose()
        data = self._completion(raw)
        if call.stream:  # a server that ignored `stream: true`
            raise protocol_error(self.provider.name, "a JSON body instead of a stream")
        message, usage = translate_response(data, context)
        return Reply(status=200, headers=list(JSON_HEADERS), body=orjson.dumps(message), usage=usage)

    async def aclose(self) -> None:
        return None

    async def _stream(self, response: httpx.Response, context: ReplyContext) -> Reply:
        translator = StreamTranslator(context)
        events = self._translated(response, translator)
        try:
            first = await events.__anext__()  # priming: the translator yields or raises, it never just ends
        except BaseException:
            await events.aclose()
            await response.aclose()
            raise

        async def relay() -> AsyncIterator[bytes]:
            try:
                yield first
                async for output in events:
                    yield output
            finally:
                await events.aclose()
                await response.aclose()

        return Reply(status=200, headers=list(STREAM_HEADERS), stream=relay(), usage=translator.usage,
                     aclose=response.aclose)

    async def _translated(self, response: httpx.Response, translator: StreamTranslator) -> AsyncIterator[bytes]:
        """Anthropic SSE bytes, one piece per upstream event that produced output."""
        try:
            async for raw in iter_body(response, self.endpoint.timeouts):
                for output in translator.feed(raw):
                    yield output
                if translator.done:
                    return
            for output in translator.finish():
                yield output
        except UpstreamError as exc:
            raise self._named(exc) from None

    def _completion(self, raw: bytes) -> dict[str, Any]:
        """A 200 body as a completion object; an `{"error": …}` object or anything but a JSON object raises."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise protocol_error(self.provider.name, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise protocol_error(self.provider.name, "the body is not a JSON object")
        if data.get("error"):
            raise embedded_error(self.provider.name, data["error"])
        return data

    def _named(self, exc: UpstreamError) -> UpstreamError:
        if not exc.provider:
            exc.provider = self.provider.name
        return exc


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == "application/json"
