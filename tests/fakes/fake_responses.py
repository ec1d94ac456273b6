"""A strict fake of OpenAI's Responses API (`POST /v1/responses`), for the Responses adapter's tests.

`check_responses_request(body)` rejects what the real API rejects, in OpenAI's error shape (`ResponsesRejected`):
- unknown top-level parameters; `input` items of unknown types; message roles outside user/assistant/system/developer;
  content parts as the official `openai` types have them: an input message (no `id`) holds a string or `input_*`
  parts whatever its role; `output_text`/`refusal` parts only in a complete output message (assistant, with `id`,
  `status`, and `annotations` on each `output_text`); `input_image.detail` outside low/high/auto;
- `reasoning` items without `id` or `summary`, or not followed by the item they came with (a `function_call` or an
  assistant message: "…was provided without its required following item"), and `encrypted_content` this fake did
  not issue ("could not be verified"); `include` values the API does not know;
- a `function_call_output` whose call is not earlier in the input ("No tool call found for function call output with
  call_id …"), and a `function_call` never answered ("No tool output found for function call …");
- function tools without a name or with non-object parameters; `strict` (true unless given) schemas that are not
  strict-compatible (every object `additionalProperties: false` and all properties required);
- `tool_choice` that is not auto/none/required/a named offered function; `max_output_tokens` below 16;
- `reasoning` on a model that is not a reasoning model, or with an unknown effort/summary.

`FakeResponses` serves it over ASGI, checks `Authorization: Bearer`, records requests, and answers scripted turns
(lists of output items; default a short message) as a real event stream (created, in_progress, per item added /
deltas / done, completed with usage) or one response object. `args_only_in_done=True` sends function-call arguments
only in the `.done` events, as some backends do.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .upstream import WholeBodyFake

Item = dict[str, Any]
Turn = list[Item] | Callable[[dict[str, Any]], list[Item]]

ENCRYPTED_REASONING = "reasoning.encrypted_content"
_INCLUDABLE = {
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    ENCRYPTED_REASONING, "message.output_text.logprobs",
}

_TOP = {
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens", "temperature",
    "top_p", "reasoning", "store", "stream", "include", "metadata", "previous_response_id", "text", "truncation",
    "user", "safety_identifier", "prompt_cache_key", "service_tier", "background", "max_tool_calls", "top_logprobs",
    "stream_options",
}
_INPUT_PARTS = {"input_text", "input_image", "input_file"}
_REASONING_MODEL = re.compile(r"^(o[134]|gpt-5|codex|gpt-oss)")


class ResponsesRejected(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def check_responses_request(body: Any, issued: set[str] | None = None) -> None:
    """`issued`: the encrypted reasoning this server handed out (None: any is taken as genuine)."""
    if not isinstance(body, dict):
        raise ResponsesRejected("The request body must be a JSON object.")
    for key in body:
        if key not in _TOP:
            raise ResponsesRejected(f"Unrecognized request argument supplied: {key}", key)
    if not isinstance(body.get("model"), str):
        raise ResponsesRejected("Missing required parameter: 'model'.", "model")
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        if name in body and (not isinstance(body[name], str) or len(body[name]) > 64):
            raise ResponsesRejected(f"Invalid '{name}': string too long. Expected a string with maximum length 64.",
                                    name)
    for value in body.get("include") or ():
        if value not in _INCLUDABLE:
            raise ResponsesRejected(f"Invalid value for 'include': '{value}'.", "include")
    items = body.get("input")
    if isinstance(items, list):
        _check_items(items, issued)
    elif not isinstance(items, str):
        raise ResponsesRejected("Missing required parameter: 'input'.", "input")
    offered = {_check_tool(t, i) for i, t in enumerate(body.get("tools") or ())}
    _check_tool_choice(body.get("tool_choice"), offered)
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 16):
        raise ResponsesRejected(
            "Invalid 'max_output_tokens': integer below minimum value. "
            f"Expected a value >= 16, but got {limit} instead.",
            "max_output_tokens",
        )
    reasoning = body.get("reasoning")
    if reasoning is not None:
        name = body["model"].rsplit("/", 1)[-1]
        if not _REASONING_MODEL.match(name) or "-chat" in name:
            raise ResponsesRejected("Unsupported parameter: 'reasoning.effort' is not supported with this model.",
                                    "reasoning.effort")
        if reasoning.get("effort") not in (None, "none", "minimal", "low", "medium", "high", "xhigh"):
            raise ResponsesRejected(f"Invalid value: '{reasoning.get('effort')}'.", "reasoning.effort")
        if reasoning.get("summary") not in (None, "auto", "concise", "detailed"):
            raise ResponsesRejected(f"Invalid value: '{reasoning.get('summary')}'.", "reasoning.summary")


def _check_items(items: list[Any], issued: set[str] | None) -> None:
    called: set[str] = set()
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            _check_message(item, i)
        elif kind == "function_call":
            if not item.get("call_id") or not item.get("name") or not isinstance(item.get("arguments"), str):
                raise ResponsesRejected("function_call needs call_id, name and string arguments.", f"input[{i}]")
            called.add(item["call_id"])
        elif kind == "function_call_output":
            if item.get("call_id") not in called:
                raise ResponsesRejected(
                    f"No tool call found for function call output with call_id {item.get('call_id')}.", f"input[{i}]"
                )
            output = item.get("output")
            if isinstance(output, list):
                for j, part in enumerate(output):
                    _check_input_part(part, f"input[{i}].output[{j}]")
            elif not isinstance(output, str):
                raise ResponsesRejected("Invalid type for 'output': expected a string or an array.",
                                        f"input[{i}].output")
            answered.add(item["call_id"])
        elif kind == "reasoning":
            _check_reasoning(item, items[i + 1] if i + 1 < len(items) else None, i, issued)
        else:
            raise ResponsesRejected(f"Invalid value: '{kind}'.", f"input[{i}].type")
    missing = called - answered
    if missing:
        raise ResponsesRejected(f"No tool output found for function call {sorted(missing)[0]}.", "input")


def _check_reasoning(item: dict[str, Any], following: Any, i: int, issued: set[str] | None) -> None:
    if not isinstance(item.get("id"), str) or not isinstance(item.get("summary"), list):
        raise ResponsesRejected("Missing required parameter: 'input[].id' or 'input[].summary'.", f"input[{i}]")
    follows = isinstance(following, dict) and (
        following.get("type") == "function_call"
        or (following.get("type", "message") == "message" and following.get("role") == "assistant")
    )
    if not follows:
        raise ResponsesRejected(
            f"Item '{item['id']}' of type 'reasoning' was provided without its required following item.", f"input[{i}]")
    encrypted = item.get("encrypted_content")
    if encrypted is not None and issued is not None and encrypted not in issued:
        raise ResponsesRejected(f"The encrypted content for item {item['id']} could not be verified.", f"input[{i}]")


def _check_message(item: dict[str, Any], i: int) -> None:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise ResponsesRejected(f"Invalid value: '{role}'. "
                                "Supported values are: 'assistant', 'system', 'developer', and 'user'.",
                                f"input[{i}].role")
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise ResponsesRejected("Invalid 'content': expected a string or a non-empty array.", f"input[{i}].content")
    # The official types: an output message (assistant, with id and status) holds output_text/refusal parts; any
    # other message is an input message, whose parts are input parts whatever its role.
    output = role == "assistant" and isinstance(item.get("id"), str) and item.get("status") in (
        "in_progress", "completed", "incomplete")
    for j, part in enumerate(content):
        where = f"input[{i}].content[{j}]"
        if output:
            if part.get("type") not in ("output_text", "refusal"):
                raise ResponsesRejected(f"Invalid value: '{part.get('type')}'. "
                                        "Supported values are: 'output_text' and 'refusal'.", where)
            if part.get("type") == "output_text" and not isinstance(part.get("annotations"), list):
                raise ResponsesRejected("Missing required parameter: 'annotations'.", f"{where}.annotations")
            if not isinstance(part.get("text", part.get("refusal")), str):
                raise ResponsesRejected("Missing required parameter: 'text'.", where)
        else:
            _check_input_part(part, where)


def _check_input_part(part: dict[str, Any], where: str) -> None:
    kind = part.get("type")
    if kind not in _INPUT_PARTS:
        raise ResponsesRejected(f"Invalid value: '{kind}'. "
                                "Supported values are: 'input_text', 'input_image', and 'input_file'.", where)
    if kind == "input_text" and not isinstance(part.get("text"), str):
        raise ResponsesRejected("Missing required parameter: 'text'.", where)
    if kind == "input_image":
        if not (part.get("image_url") or part.get("file_id")):
            raise ResponsesRejected("input_image needs image_url or file_id.", where)
        if part.get("detail", "auto") not in ("low", "high", "auto"):
            raise ResponsesRejected(f"Invalid value: '{part.get('detail')}'.", f"{where}.detail")
    if kind == "input_file" and not (part.get("file_data") or part.get("file_id") or part.get("file_url")):
        raise ResponsesRejected("input_file needs file_data, file_id or file_url.", where)


def _check_tool(tool: dict[str, Any], i: int) -> str:
    if tool.get("type") != "function":
        raise ResponsesRejected(f"Invalid value: '{tool.get('type')}'.", f"tools[{i}].type")
    if not isinstance(tool.get("name"), str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", tool["name"]):
        raise ResponsesRejected("Invalid 'tools[].name'.", f"tools[{i}].name")
    parameters = tool.get("parameters")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ResponsesRejected("Invalid schema for function: schema must be a JSON Schema of 'type: \"object\"'.",
                                f"tools[{i}].parameters")
    if tool.get("strict", True):
        _check_strict(parameters, f"tools[{i}].parameters", tool["name"])
    return tool["name"]


def _check_strict(schema: Any, where: str, name: str) -> None:
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object":
        if schema.get("additionalProperties") is not False:
            raise ResponsesRejected(
                f"Invalid schema for function '{name}': In context=(), "
                "'additionalProperties' is required to be supplied and to be false.", where)
        properties = schema.get("properties") or {}
        if set(schema.get("required") or ()) != set(properties):
            raise ResponsesRejected(
                f"Invalid schema for function '{name}': In context=(), 'required' is required to be supplied and to be "
                "an array including every key in properties.", where)
        for key, value in properties.items():
            _check_strict(value, f"{where}.properties.{key}", name)
    if isinstance(schema.get("items"), dict):
        _check_strict(schema["items"], f"{where}.items", name)


def _check_tool_choice(choice: Any, offered: set[str]) -> None:
    if choice is None or choice in ("auto", "none", "required"):
        return
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name") in offered:
        return
    raise ResponsesRejected(f"Invalid value for 'tool_choice': {choice!r}.", "tool_choice")


# --- the ASGI app --------------------------------------------------------------------------------------------------


@dataclass
class ResponsesExchange:
    body: dict[str, Any]
    headers: dict[str, str]
    rejected: str | None = None


@dataclass
class FakeResponses(WholeBodyFake):
    key: str = "responses-test-key"
    args_only_in_done: bool = False
    usage: dict[str, Any] = field(default_factory=lambda: {
        "input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024}, "output_tokens": 25,
        "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 1225,
    })
    default: Turn = field(default_factory=lambda: [message_item("Hello from fake Responses.")])
    exchanges: list[ResponsesExchange] = field(default_factory=list)
    issued: set[str] = field(default_factory=set)  # encrypted reasoning handed out, checked when it comes back
    _turns: deque[Turn] = field(default_factory=deque)
    _ids: itertools.count = field(default_factory=itertools.count)

    def respond(self, scope: dict[str, Any], raw: bytes) -> tuple[int, bytes, bytes]:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["method"] != "POST" or scope["path"] != "/v1/responses":
            return _error(404, f"Invalid URL ({scope['method']} {scope['path']})", None)
        if headers.get("authorization") != f"Bearer {self.key}":
            return _error(401, "Incorrect API key provided.", None)
        body = orjson.loads(raw)
        exchange = ResponsesExchange(body, headers)
        self.exchanges.append(exchange)
        try:
            check_responses_request(body, self.issued)
        except ResponsesRejected as rejected:
            exchange.rejected = rejected.message
            return _error(rejected.status, rejected.message, rejected.param)
        items = self.next_turn(body)
        items = [dict(item, id=item.get("id") or f"item_{next(self._ids)}") for item in items]
        for item in items:  # like the API: encrypted reasoning only for those who ask for it
            if item["type"] == "reasoning" and "encrypted_content" in item:
                if ENCRYPTED_REASONING in (body.get("include") or ()):
                    self.issued.add(item["encrypted_content"])
                else:
                    del item["encrypted_content"]
        response = {"id": f"resp_{next(self._ids)}", "object": "response", "model": body["model"],
                    "status": "completed",
                    "output": items, "usage": self.usage, "incomplete_details": None, "error": None}
        if not body.get("stream"):
            return 200, b"application/json", orjson.dumps(response)
        return 200, b"text/event-stream", b"".join(_frame(e) for e in self._events(response))

    def _events(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        started = dict(response, status="in_progress", output=[], usage=None)
        events: list[dict[str, Any]] = [{"type": "response.created", "response": started},
                                        {"type": "response.in_progress", "response": started}]
        for index, item in enumerate(response["output"]):
            events.extend(_item_events(index, item, self.args_only_in_done))
        events.append({"type": "response.completed", "response": response})
        return [dict(e, sequence_number=n) for n, e in enumerate(events)]


def _item_events(index: int, item: Item, args_only_in_done: bool) -> list[dict[str, Any]]:
    kind = item["type"]
    base = {"output_index": index, "item_id": item["id"]}
    if kind == "function_call":
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": dict(item, arguments="", status="in_progress")}]
        if not args_only_in_done:
            arguments = item["arguments"]
            events += [{"type": "response.function_call_arguments.delta", **base, "delta": arguments[i : i + 7]}
                       for i in range(0, len(arguments), 7)]
        events.append({"type": "response.function_call_arguments.done", **base, "arguments": item["arguments"]})
    elif kind == "message":
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": dict(item, content=[], status="in_progress")}]
        for c, part in enumerate(item["content"]):
            events += [{"type": "response.content_part.added", **base, "content_index": c, "part": dict(part, text="")}]
            events += [{"type": "response.output_text.delta", **base, "content_index": c, "delta": word}
                       for word in re.findall(r"\S+\s*", part["text"])]
            events += [{"type": "response.output_text.done", **base, "content_index": c, "text": part["text"]},
                       {"type": "response.content_part.done", **base, "content_index": c, "part": part}]
    else:
        added = {k: v for k, v in item.items() if k != "encrypted_content"}  # complete only in output_item.done
        events = [{"type": "response.output_item.added", "output_index": index, "item": dict(added, summary=[])}]
        for s, summary in enumerate(item.get("summary") or ()):
            events += [{"type": "response.reasoning_summary_part.added", **base, "summary_index": s,
                        "part": {"type": "summary_text", "text": ""}},
                       {"type": "response.reasoning_summary_text.delta", **base, "summary_index": s,
                        "delta": summary["text"]},
                       {"type": "response.reasoning_summary_text.done", **base, "summary_index": s,
                        "text": summary["text"]}]
    events.append({"type": "response.output_item.done", "output_index": index, "item": dict(item, status="completed")})
    return events


def _frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _error(status: int, message: str, param: str | None) -> tuple[int, bytes, bytes]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, b"application/json", orjson.dumps({"error": {"message": message, "type": kind, "param": param,
                                                                "code": None}})


def message_item(text: str) -> Item:
    return {"type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def call_item(name: str, arguments: dict[str, Any], call_id: str) -> Item:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": orjson.dumps(arguments).decode(),
            "status": "completed"}


def reasoning_item(*summaries: str, id: str | None = None, encrypted_content: str | None = None) -> Item:
    item: Item = {"type": "reasoning", "summary": [{"type": "summary_text", "text": s} for s in summaries]}
    if id is not None:
        item["id"] = id
    if encrypted_content is not None:
        item["encrypted_content"] = encrypted_content
    return item
