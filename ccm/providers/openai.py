"""The adapter for OpenAI-compatible Chat Completions servers (OpenAI, OpenRouter, DeepSeek, Groq, Ollama, vLLM,
LM Studio…): one upstream attempt per `send`, Anthropic Messages in and out.

The translation is pure and lives beside this module: `openai_translate.translate_request` (request),
`translate_response` here (a complete completion), `openai_stream.StreamTranslator` (a stream). Both reply
directions write through the same `reply.EventWriter`; a non-stream message is the folded event sequence, so the
two kinds of reply cannot disagree. This module only moves bytes: it POSTs `{url}/chat/completions` through
`ccm.providers.http` (the one place transport failures and error statuses become `UpstreamError`s) and relays the
answer with `reply.stream_reply`, which primes the stream (a failure before the first output is raised from `send`,
so the core can still answer with a real status or fall back) and forwards each read's output as it is translated.

The adapter does not own its `httpx.AsyncClient` (the core builds one per provider and closes it), so `aclose`
has nothing to release.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from ccm.providers.base import Call, Reply, Usage
from ccm.providers.http import Endpoint, open_response
from ccm.providers.openai_stream import (
    INVALID_RESPONSE,
    ReplyContext,
    StreamTranslator,
    embedded_error,
    stop_reason,
    usage_from,
)
from ccm.providers.openai_translate import translate_request
from ccm.providers.reply import JSON_HEADERS, EventWriter, fold_message, protocol_error, read_all, stream_reply
from ccm.providers.tool_json import parse_arguments
from ccm.table import Provider

log = logging.getLogger("ccm.providers.openai")


def translate_response(data: Mapping[str, Any], context: ReplyContext, usage: Usage) -> dict[str, Any]:
    """A complete Chat Completions answer → an Anthropic message (thinking, text, then tool_use blocks); `usage`
    is filled in place."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise protocol_error(context.provider, INVALID_RESPONSE + "the completion has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    writer = context.writer(usage)
    writer.start()
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str):
        writer.thinking(reasoning)
    text = message.get("content")
    if isinstance(text, list):  # content parts (Mistral): keep the text ones
        text = "".join(p["text"] for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
    text = text if isinstance(text, str) and text else message.get("refusal")
    if isinstance(text, str):
        writer.text(text)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        _tool_use(call, context, writer)

    if isinstance(data.get("usage"), dict):
        usage_from(data["usage"], usage)
    finish = choice.get("finish_reason")
    stop_string = context.matched_stop(choice.get("stop_reason"))
    reason = stop_reason(finish if isinstance(finish, str) else None, writer.saw_tool_use, stop_string)
    writer.finish(reason, stop_string if reason == "stop_sequence" else None)
    return fold_message(writer.take())


def _tool_use(call: Any, context: ReplyContext, writer: EventWriter) -> None:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        log.warning("dropped a tool call without a name from %s", context.provider or "upstream")
        return
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
    writer.tool_use(writer.tool_id(call.get("id")), context.names.anthropic(name), orjson.dumps(tool_input).decode())


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
            return await stream_reply(response, self.endpoint.timeouts, StreamTranslator(context))
        data = self._completion(await read_all(self.provider.name, response, self.endpoint.timeouts))
        if call.stream:  # a server that ignored `stream: true`
            raise protocol_error(self.provider.name, INVALID_RESPONSE + "a JSON body instead of a stream")
        usage = Usage()
        message = translate_response(data, context, usage)
        return Reply(status=200, headers=list(JSON_HEADERS), body=orjson.dumps(message), usage=usage)

    async def aclose(self) -> None:
        return None

    def _completion(self, raw: bytes) -> dict[str, Any]:
        """A 200 body as a completion object; an `{"error": …}` object or anything but a JSON object raises."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise protocol_error(self.provider.name, INVALID_RESPONSE + "the body is not JSON") from None
        if not isinstance(data, dict):
            raise protocol_error(self.provider.name, INVALID_RESPONSE + "the body is not a JSON object")
        if data.get("error"):
            raise embedded_error(self.provider.name, data["error"])
        return data


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == "application/json"
