"""`FakeDeepSeek`: FakeOpenAI in DeepSeek's flavour, for `examples/deepseek-thinking.ccm` and `examples/mixed.ccm`.

What DeepSeek's API does differently from OpenAI's, as its docs (api-docs.deepseek.com: Thinking Mode, Models &
Pricing, Error Codes) and the errors quoted in public issues describe it. Every request first passes OpenAI's
structural checks (`openai_rules`, which DeepSeek shares: roles, tool-call ordering, tools, no Anthropic fields), then:

- `model` is one of `caps` (default `deepseek-chat` 8192, `deepseek-reasoner` 32768), else 400 `Model Not Exist`;
  `max_tokens` (or `max_completion_tokens`) above the model's cap is 400 `Invalid max_tokens value, the valid range
  of max_tokens is [1, N]`.
- Thinking mode (`thinking_models`, default `deepseek-reasoner`):
  - the `reasoning_content` rule: the conversation is cut into turns at each `user` message; in a turn where the
    model called tools, EVERY assistant message must carry `reasoning_content` (a string; `""` passes), in every
    later request too ("for turns that do perform tool calls, the reasoning_content must be fully passed back to
    the API in all subsequent requests"). A missing one is 400 ``Missing `reasoning_content` field in the assistant
    message at message index N`` (N counts every message, the system one included). In a turn without tool calls
    the field is optional and ignored.
  - `tool_choice` other than `"auto"` is 400 `deepseek-reasoner does not support this tool_choice` (reported for
    `required` and named functions); `logprobs` / `top_logprobs` are 400 (`temperature`, `top_p` and the
    penalties are accepted and ignored, as documented).
- Errors are `{"error": {"message", "type", "param": null, "code": "invalid_request_error"}}`; a wrong key is 401
  `Authentication Fails`. Both `/chat/completions` and `/v1/chat/completions` are served.

Replies are written as DeepSeek writes them. In thinking mode every delta carries both `content` and
`reasoning_content`, one of them null; the first chunk opens with `reasoning_content: ""` (which must not open a
thinking block); reasoning streams before the text and the tool calls. Tool-call ids look like `call_00_<hex>`.
Usage reports `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens` (prompt_tokens includes the hits) and
`completion_tokens_details.reasoning_tokens`, without OpenAI's `prompt_tokens_details`, so a client that knows only
`cached_tokens` misses the cache figures; the usage chunk comes last (`choices: []`) when `include_usage` is asked.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from .openai import FakeOpenAI
from .openai_rules import Limits, check_chat_request
from .script import Behaviour, Exchange, Reply
from .upstream import Answer, Rejected, json_body, stream_answer

DEFAULT_CAPS = {"deepseek-chat": 8192, "deepseek-reasoner": 32768}
THINKING_MODELS = frozenset({"deepseek-reasoner"})
REPLAY_DOCS = "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"

_ids = itertools.count(1)


def missing_reasoning(messages: list[Any]) -> int | None:
    """The index of the first assistant message that lacks `reasoning_content` in a turn (the messages between two
    user messages) where the model called tools; None when every such message carries it."""
    turn: list[tuple[int, dict[str, Any]]] = []
    for index, message in enumerate([*messages, {"role": "user"}]):  # a sentinel closes the last turn
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            if any(m.get("tool_calls") for _, m in turn):
                for at, assistant in turn:
                    if not isinstance(assistant.get("reasoning_content"), str):
                        return at
            turn = []
        elif role == "assistant":
            turn.append((index, message))
    return None


def check_deepseek_request(body: Mapping[str, Any], caps: Mapping[str, int], thinking_models: frozenset[str]) -> None:
    """DeepSeek's own refusals, after OpenAI's structural checks have passed."""
    model = body["model"]
    if model not in caps:
        raise Rejected(400, "Model Not Exist")
    cap = caps[model]
    for name in ("max_tokens", "max_completion_tokens"):
        if name in body and body[name] > cap:
            raise Rejected(400, f"Invalid max_tokens value, the valid range of max_tokens is [1, {cap}]")
    if model not in thinking_models:
        return
    choice = body.get("tool_choice")
    if choice is not None and choice != "auto":
        raise Rejected(400, f"{model} does not support this tool_choice")
    for name in ("logprobs", "top_logprobs"):
        if name in body:
            raise Rejected(400, f"{model} does not support the parameter `{name}`")
    index = missing_reasoning(body["messages"])
    if index is not None:
        raise Rejected(
            400,
            f"Missing `reasoning_content` field in the assistant message at message index {index}. For more "
            f"information, please refer to {REPLAY_DOCS}",
        )


class FakeDeepSeek(FakeOpenAI):
    def __init__(
        self,
        api_key: str = "sk-fake-deepseek",
        *,
        default: Behaviour | None = None,
        caps: Mapping[str, int] | None = None,
        thinking_models: frozenset[str] = THINKING_MODELS,
    ) -> None:
        super().__init__(api_key, default=default, reasoning_field="reasoning_content")
        self.caps = dict(caps if caps is not None else DEFAULT_CAPS)
        self.thinking_models = thinking_models
        self.limits = Limits(max_output=None, strict=True)  # the cap is per model here, with DeepSeek's wording
        self.routes[("POST", "/chat/completions")] = self._chat

    def _authorize(self, exchange: Exchange) -> None:
        if exchange.headers.get("authorization") != f"Bearer {self.api_key}":
            raise Rejected(401, "Authentication Fails (no such user)", "authentication_error")

    def _chat(self, exchange: Exchange) -> Answer:
        self._authorize(exchange)
        body = json_body(exchange, "Failed to deserialize the JSON body into the target type")
        check_chat_request(body, self.limits)
        check_deepseek_request(body, self.caps, self.thinking_models)
        return self.scripted_answer(exchange)

    def error_answer(self, rejected: Rejected) -> Answer:
        error_type = rejected.error_type
        if rejected.status == 429:
            error_type = "rate_limit_reached_error"
        elif rejected.status >= 500:
            error_type = "server_error"
        error = {"message": rejected.message, "type": error_type, "param": None, "code": "invalid_request_error"}
        body = {"error": error}
        return Answer(rejected.status, [("content-type", "application/json"), *rejected.headers], orjson.dumps(body))

    # --- rendering ----------------------------------------------------------------------------------------------------

    def render(self, reply: Reply, exchange: Exchange) -> Answer:
        body = exchange.json
        model = body["model"]
        thinking = model in self.thinking_models
        completion_id = str(uuid.uuid4())
        created = int(time.time())
        calls = [(call.id or f"call_{i:02d}_{uuid.uuid4().hex[:24]}", call) for i, call in enumerate(reply.tool_calls)]
        finish = reply.finish if reply.finish is not None else ("tool_calls" if calls else "stop")
        usage = _usage(reply)
        headers = [("x-ds-trace-id", f"fake{next(_ids)}"), *reply.headers]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if thinking or reply.reasoning:
                message["reasoning_content"] = reply.reasoning
            if calls:
                message["tool_calls"] = [
                    {"index": i, "id": call_id, "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments_json()}}
                    for i, (call_id, c) in enumerate(calls)
                ]
            completion = {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage, "system_fingerprint": "fp_fake_deepseek",
            }
            return Answer(200, [("content-type", "application/json"), *headers], orjson.dumps(completion))

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def frame(value: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps(value) + b"\n\n"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            if thinking:  # DeepSeek's thinking stream names both fields in every delta, one of them null
                delta = {"content": None, "reasoning_content": None, **delta}
            return frame({
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_fake_deepseek",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            })

        opening: dict[str, Any] = {"role": "assistant", "content": None, "reasoning_content": ""} if thinking else {
            "role": "assistant", "content": ""}
        frames = [chunk(opening)]
        frames += [chunk({"reasoning_content": piece}) for piece in reply.split(reply.reasoning)]
        frames += [chunk({"content": piece}) for piece in reply.split(reply.text)]
        for index, (call_id, call) in enumerate(calls):
            function = {"name": call.name, "arguments": ""}
            start = {"index": index, "id": call_id, "type": "function", "function": function}
            frames.append(chunk({"tool_calls": [start]}))
            frames += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in reply.split(call.arguments_json())
            ]
        frames.append(chunk({"content": ""}, finish))
        if include_usage and reply.send_usage:
            frames.append(frame({
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_fake_deepseek", "choices": [], "usage": usage,
            }))
        frames.append(b"data: [DONE]\n\n")
        error = {"error": {"message": "Service is too busy. Please try again later.", "type": "server_error",
                           "param": None, "code": "invalid_request_error"}}
        return stream_answer(reply, frames, headers, error_frame=frame(error), malformed_frame=b"data: {not json\n\n")


def _usage(reply: Reply) -> dict[str, Any]:
    """DeepSeek's usage object: prompt_tokens = cache hits + misses; reasoning counted inside completion_tokens."""
    hits = min(reply.cached_tokens, reply.input_tokens)
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_cache_hit_tokens": hits,
        "prompt_cache_miss_tokens": reply.input_tokens - hits,
        "completion_tokens_details": {"reasoning_tokens": min(len(reply.reasoning.split()), reply.output_tokens)},
    }
