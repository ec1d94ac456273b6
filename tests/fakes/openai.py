"""`FakeOpenAI`: a strict OpenAI-compatible Chat Completions server (`POST /v1/chat/completions`, `GET /v1/models`).

Requests are checked like OpenAI checks them (`openai_rules`), the key as `Authorization: Bearer <api_key>`, and a
refusal is a 400 in OpenAI's shape `{"error":{"message","type","param","code"}}`. Replies are written exactly as
OpenAI writes them: `chat.completion` objects, or `chat.completion.chunk` frames (`data: …\\n\\n`) that open with
`{"role":"assistant","content":""}`, carry reasoning in `reasoning_field` (`reasoning_content` for DeepSeek/vLLM,
`reasoning` for OpenRouter), tool calls as an opening delta with id, name and `""` arguments then argument
fragments, a finish chunk, a usage chunk with `choices: []` when `stream_options.include_usage`, and `data: [DONE]`.
`keepalive_comments` adds OpenRouter's `: OPENROUTER PROCESSING` lines and `crlf` frames lines with CRLF.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson

from .openai_rules import Limits, check_chat_request
from .script import Behaviour, Exchange, Reply
from .upstream import Answer, FakeUpstream, Rejected, json_body, stream_answer

_ids = itertools.count(1)


class FakeOpenAI(FakeUpstream):
    def __init__(
        self,
        api_key: str = "sk-fake-openai",
        *,
        default: Behaviour | None = None,
        max_output: int | None = None,
        strict: bool = True,
        reasoning_field: str = "reasoning_content",
        keepalive_comments: bool = False,
        crlf: bool = False,
    ) -> None:
        super().__init__(default)
        self.api_key = api_key
        self.limits = Limits(max_output=max_output, strict=strict)
        self.reasoning_field = reasoning_field
        self.keepalive_comments = keepalive_comments
        self.crlf = crlf
        self.routes = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("GET", "/v1/models"): self._models,
        }

    def chat_requests(self) -> list[Exchange]:
        return self.requests("/v1/chat/completions")

    def _authorize(self, exchange: Exchange) -> None:
        if exchange.headers.get("authorization") != f"Bearer {self.api_key}":
            raise Rejected(
                401,
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )

    def _chat(self, exchange: Exchange) -> Answer:
        self._authorize(exchange)
        if not exchange.headers.get("content-type", "").startswith("application/json"):
            raise Rejected(400, "Invalid content type: expected application/json.")
        body = json_body(
            exchange,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
            "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        )
        check_chat_request(body, self.limits)
        return self.scripted_answer(exchange)

    def _models(self, exchange: Exchange) -> Answer:
        self._authorize(exchange)
        body = {"object": "list", "data": [{"id": "gpt-fake", "object": "model", "created": 0, "owned_by": "fake"}]}
        return Answer(200, [("content-type", "application/json")], orjson.dumps(body))

    # --- rendering ---------------------------------------------------------------------------------------------

    def error_answer(self, rejected: Rejected) -> Answer:
        error_type = rejected.error_type
        if rejected.status == 429:
            error_type = "rate_limit_exceeded"
        elif rejected.status >= 500:
            error_type = "server_error"
        body = {"error": {"message": rejected.message, "type": error_type, "param": rejected.param,
                          "code": rejected.code}}
        return Answer(rejected.status, [("content-type", "application/json"), *rejected.headers], orjson.dumps(body))

    def render(self, reply: Reply, exchange: Exchange) -> Answer:
        body = exchange.json
        model = body["model"]
        completion_id = f"chatcmpl-fake{next(_ids)}"
        created = int(time.time())
        calls = [(call.id or f"call_fake{next(_ids)}", call) for call in reply.tool_calls]
        finish = reply.finish if reply.finish is not None else ("tool_calls" if calls else "stop")
        usage = {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        headers = [("x-request-id", f"req_fake{next(_ids)}"), *reply.headers]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
            if reply.reasoning:
                message[self.reasoning_field] = reply.reasoning
            if calls:
                message["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
                    for i, c in calls
                ]
            completion = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
                "system_fingerprint": "fp_fake",
            }
            return Answer(200, [("content-type", "application/json"), *headers], orjson.dumps(completion))

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        newline = b"\r\n" if self.crlf else b"\n"

        def frame(data: bytes) -> bytes:
            comment = b": OPENROUTER PROCESSING" + newline + newline if self.keepalive_comments else b""
            return comment + b"data: " + data + newline + newline

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            value: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                value["usage"] = None
            return frame(orjson.dumps(value))

        frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
        frames += [chunk({self.reasoning_field: piece}) for piece in reply.split(reply.reasoning)]
        frames += [chunk({"content": piece}) for piece in reply.split(reply.text)]
        for index, (call_id, call) in enumerate(calls):
            opening = {"index": index, "id": call_id, "type": "function",
                       "function": {"name": call.name, "arguments": ""}}
            frames.append(chunk({"tool_calls": [opening]}))
            frames += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in reply.split(call.arguments_json())
            ]
        frames.append(chunk({}, finish))
        if include_usage and reply.send_usage:
            frames.append(
                frame(
                    orjson.dumps(
                        {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "system_fingerprint": "fp_fake",
                            "choices": [],
                            "usage": usage,
                        }
                    )
                )
            )
        frames.append(frame(b"[DONE]"))
        error = {"error": {"message": "The server had an error while processing your request.", "type": "server_error",
                           "param": None, "code": None}}
        return stream_answer(reply, frames, headers, error_frame=frame(orjson.dumps(error)),
                             malformed_frame=b"data: {not json" + newline + newline)
