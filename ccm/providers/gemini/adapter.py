"""The Gemini adapter (`type gemini`): `generateContent` / `streamGenerateContent?alt=sse` behind Anthropic Messages.

Request translation is `gemini.request`; the answer is read back by `gemini.reply`. Each streamed SSE `data:` is a
whole `GenerateContentResponse` holding only new parts, and a non-stream answer is one such response, so both go
through the same `GeminiReader` (the non-stream message is the folded event sequence).
"""

from __future__ import annotations

from urllib.parse import quote

import orjson

from ccm.providers.base import Call, Reply, Usage
from ccm.providers.gemini.reply import GeminiReader, translate_response
from ccm.providers.gemini.request import translate_request
from ccm.providers.reply import (
    JSON_HEADERS,
    read_json,
    stream_reply,
)
from ccm.providers.tool_names import GEMINI, ToolNames
from ccm.table import Provider
from ccm.upstream.client import Endpoint, PooledClient, open_response


class GeminiAdapter:
    """One per `gemini` provider. The pooled client belongs to the runtime, which closes it."""

    def __init__(self, provider: Provider, endpoint: Endpoint, client: PooledClient) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.client = client
        root = endpoint.url
        # The url is the API root; one that already names the API version is used as written.
        self._base = root if root.rsplit("/", 1)[-1].startswith("v1") else f"{root}/v1beta"

    async def send(self, call: Call) -> Reply:
        names = ToolNames.for_request(call.body, GEMINI)
        body = orjson.dumps(translate_request(call.body, call.model, names))
        model_path = f"{self._base}/models/{quote(call.model.model.removeprefix('models/'), safe='-._~')}"
        url = f"{model_path}:streamGenerateContent?alt=sse" if call.stream else f"{model_path}:generateContent"
        response = await open_response(self.client, self.endpoint, url, body, JSON_HEADERS)
        name = str(call.body.get("model") or call.model.name)
        if call.stream:
            reader = GeminiReader(self.provider.name, name, Usage(), names, call.input_tokens)
            return await stream_reply(response, self.endpoint.timeouts, reader)
        data = await read_json(self.provider.name, response, self.endpoint.timeouts)
        usage = Usage()
        message = translate_response(data, self.provider.name, name, usage, names)
        return Reply(status=200, headers=list(JSON_HEADERS), body=orjson.dumps(message), usage=usage)

    async def aclose(self) -> None:
        return None

