"""`FakeAnthropic`: a strict Anthropic Messages server (`POST /v1/messages`, `POST /v1/messages/count_tokens`).

It checks the key (`x-api-key` or `Authorization: Bearer`; 401 `authentication_error` otherwise) and the
`anthropic-version` header, validates bodies like the real API (`anthropic_rules`), keeps each request's raw bytes
(`Exchange.raw`) and the exact bytes it answered (`Exchange.sent`) for byte-for-byte assertions, and answers in
Anthropic's JSON and SSE formats: `message_start`, `ping`, then per block `content_block_start` / deltas /
`content_block_stop` (thinking with `thinking_delta`s then one `signature_delta`; text with `text_delta`s; tool_use with
an empty first `input_json_delta` then the argument fragments), `message_delta` with the stop reason and cumulative
usage, `message_stop`. Errors are `{"type":"error","error":{"type","message"},"request_id"}` with a `request-id` header.

count_tokens never consumes the script: it answers `{"input_tokens": N}` with a rough estimate (bytes / 4).
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from ccm.errors import error_type_for

from .anthropic_rules import check_messages_request
from .script import Behaviour, Exchange, Reply
from .upstream import Answer, FakeUpstream, Rejected, json_body, stream_answer

_ids = itertools.count(1)


class FakeAnthropic(FakeUpstream):
    def __init__(self, api_key: str = "sk-ant-fake", *, default: Behaviour | None = None) -> None:
        super().__init__(default)
        self.api_key = api_key
        self.routes = {
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
        }

    def message_requests(self) -> list[Exchange]:
        return self.requests("/v1/messages")

    def _check_headers(self, exchange: Exchange) -> None:
        # The API takes the key as `x-api-key` or, as the Python SDK 2.x sends it, `Authorization: Bearer`.
        if self.api_key not in (exchange.headers.get("x-api-key"),
                                exchange.headers.get("authorization", "").removeprefix("Bearer ")):
            raise Rejected(401, "invalid x-api-key", "authentication_error")
        if "anthropic-version" not in exchange.headers:
            raise Rejected(400, "anthropic-version: header is required")
        if not exchange.headers.get("content-type", "").startswith("application/json"):
            raise Rejected(400, "content-type: must be application/json")

    def _messages(self, exchange: Exchange) -> Answer:
        self._check_headers(exchange)
        check_messages_request(json_body(exchange, "There was an error parsing the body of your request."))
        return self.scripted_answer(exchange)

    def _count_tokens(self, exchange: Exchange) -> Answer:
        self._check_headers(exchange)
        check_messages_request(json_body(exchange, "There was an error parsing the body of your request."),
                               count_only=True)
        body = orjson.dumps({"input_tokens": max(1, len(exchange.raw) // 4)})
        return Answer(200, [("content-type", "application/json"), ("request-id", f"req_fake{next(_ids)}")], body)

    # --- rendering ---------------------------------------------------------------------------------------------

    def error_answer(self, rejected: Rejected) -> Answer:
        request_id = f"req_fake{next(_ids)}"
        error_type = rejected.error_type
        if error_type == "invalid_request_error" and rejected.status != 400:
            error_type = error_type_for(rejected.status)
        body = {"type": "error", "error": {"type": error_type, "message": rejected.message}, "request_id": request_id}
        headers = [("content-type", "application/json"), ("request-id", request_id), *rejected.headers]
        return Answer(rejected.status, headers, orjson.dumps(body))

    def render(self, reply: Reply, exchange: Exchange) -> Answer:
        body = exchange.json
        message_id = f"msg_fake{next(_ids)}"
        calls = [(call.id or f"toolu_fake{next(_ids)}", call) for call in reply.tool_calls]
        stop_reason = reply.finish if reply.finish is not None else ("tool_use" if calls else "end_turn")
        usage = {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": reply.cached_tokens,
            "output_tokens": reply.output_tokens,
        }
        headers = [("request-id", f"req_fake{next(_ids)}"), *reply.headers]
        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if reply.reasoning:
                content.append({"type": "thinking", "thinking": reply.reasoning, "signature": reply.signature})
            if reply.text:
                content.append({"type": "text", "text": reply.text})
            content += [
                {"type": "tool_use", "id": i, "name": c.name, "input": orjson.loads(c.arguments_json())}
                for i, c in calls
            ]
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {**usage, "service_tier": "standard"},
            }
            return Answer(200, [("content-type", "application/json"), *headers], orjson.dumps(message))

        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        start = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        frames = [event("message_start", {"type": "message_start", "message": start}), event("ping", {"type": "ping"})]
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        if reply.reasoning:
            deltas = [{"type": "thinking_delta", "thinking": p} for p in reply.split(reply.reasoning)]
            blocks.append(
                (
                    {"type": "thinking", "thinking": "", "signature": ""},
                    [*deltas, {"type": "signature_delta", "signature": reply.signature}],
                )
            )
        if reply.text:
            blocks.append(({"type": "text", "text": ""},
                           [{"type": "text_delta", "text": p} for p in reply.split(reply.text)]))
        for call_id, call in calls:
            fragments = ["", *reply.split(call.arguments_json())]
            blocks.append(
                (
                    {"type": "tool_use", "id": call_id, "name": call.name, "input": {}},
                    [{"type": "input_json_delta", "partial_json": f} for f in fragments],
                )
            )
        for index, (opening, deltas) in enumerate(blocks):
            frames.append(event("content_block_start",
                                {"type": "content_block_start", "index": index, "content_block": opening}))
            frames += [event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                       for d in deltas]
            frames.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
        frames.append(
            event(
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage},
            )
        )
        frames.append(event("message_stop", {"type": "message_stop"}))
        overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return stream_answer(reply, frames, headers, error_frame=event("error", overloaded),
                             malformed_frame=b"event: content_block_delta\ndata: {not json\n\n")
