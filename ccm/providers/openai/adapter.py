"""The adapter for OpenAI-compatible Chat Completions servers (OpenAI, OpenRouter, DeepSeek, Groq, Ollama, vLLM,
LM Studio…): one upstream attempt per `send`, Anthropic Messages in and out.

The translation is pure and lives beside this module: `openai.request.translate_request` (request),
`openai.reply.translate_response` (a complete completion) and `openai.reply.StreamTranslator` (a stream). Both reply
directions write through the same `reply.EventWriter`; a non-stream message is the folded event sequence, so the
two kinds of reply cannot disagree. This module only moves bytes: it POSTs `{url}/chat/completions` through
`ccm.upstream.client` (the one place transport failures and error statuses become `UpstreamError`s) and relays the
answer with `reply.stream_reply`, which primes the stream (a failure before the first output is raised from `send`,
so the core can still answer with a real status or fall back) and forwards each read's output as it is translated.

The adapter does not own its `httpx.AsyncClient` (the core builds one per provider and closes it), so `aclose`
has nothing to release.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson

from ccm.providers.base import Call, Reply, Usage
from ccm.providers.openai.reply import (
    INVALID_RESPONSE,
    ReplyContext,
    StreamTranslator,
    embedded_error,
    translate_response,
)
from ccm.providers.openai.request import translate_request
from ccm.providers.reply import JSON_HEADERS, ended_early, read_all, stream_reply
from ccm.table import Provider
from ccm.upstream.client import Endpoint, PooledClient, open_response
from ccm.upstream.errors import protocol_error, truncated_error

log = logging.getLogger("ccm.providers.openai.adapter")


class OpenAIAdapter:
    def __init__(self, provider: Provider, endpoint: Endpoint, client: PooledClient) -> None:
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
            input_tokens=call.input_tokens,
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
        except orjson.JSONDecodeError as exc:
            if ended_early(raw, exc):
                raise truncated_error(self.provider.name, "its JSON body stops before the end") from None
            raise protocol_error(self.provider.name, INVALID_RESPONSE + "the body is not JSON") from None
        if not isinstance(data, dict):
            raise protocol_error(self.provider.name, INVALID_RESPONSE + "the body is not a JSON object")
        if data.get("error"):
            raise embedded_error(self.provider.name, data["error"])
        return data


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip() == "application/json"
