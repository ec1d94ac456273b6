"""The OpenAI Responses adapter (`type openai-responses`): `POST {url}/responses` behind Anthropic Messages.

The request is translated by `responses.request.translate_request`, the reply read by `responses.reply`.
"""

from __future__ import annotations

import orjson

from ccm.providers.base import Call, Reply, Usage
from ccm.providers.reply import JSON_HEADERS, read_json, stream_reply
from ccm.providers.responses.reply import ResponsesReader, read_response
from ccm.providers.responses.request import translate_request
from ccm.providers.tool_names import RESPONSES, ToolNames
from ccm.table import Provider
from ccm.upstream.client import Endpoint, PooledClient, open_response


class ResponsesAdapter:
    """One per `openai-responses` provider. The pooled client belongs to the runtime, which closes it."""

    def __init__(self, provider: Provider, endpoint: Endpoint, client: PooledClient) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.client = client
        self._url = f"{endpoint.url}/responses"

    async def send(self, call: Call) -> Reply:
        names = ToolNames.for_request(call.body, RESPONSES)
        body = translate_request(call.body, call.model, names)
        if call.stream:  # `call.stream` decides, whatever the client body says
            body["stream"] = True
        else:
            body.pop("stream", None)
        response = await open_response(self.client, self.endpoint, self._url, orjson.dumps(body), JSON_HEADERS)
        name = str(call.body.get("model") or call.model.name)
        if call.stream:
            reader = ResponsesReader(self.provider.name, name, Usage(), names, call.input_tokens)
            return await stream_reply(response, self.endpoint.timeouts, reader)
        data = await read_json(self.provider.name, response, self.endpoint.timeouts)
        usage = Usage()
        message = read_response(data, self.provider.name, name, usage, names)
        return Reply(status=200, headers=list(JSON_HEADERS), body=orjson.dumps(message), usage=usage)

    async def aclose(self) -> None:
        return None
