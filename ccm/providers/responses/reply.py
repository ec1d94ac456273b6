"""OpenAI Responses output → Anthropic events: the stream reader and the non-stream translation.

Events handled: `response.output_item.added` (a `function_call` opens its `tool_use` block at once; message text
and reasoning open their blocks lazily, at their first non-empty delta, so no empty block is ever sent),
`response.output_text.delta` / `.done`, `response.refusal.delta`, `response.function_call_arguments.delta` / `.done`,
`response.output_item.done`, `response.reasoning_summary_text.delta` (summary parts of one item separated by a
blank line), `response.reasoning_text.delta` (raw reasoning, from open-weight models), and the terminal
`response.completed` / `response.incomplete` / `response.failed` / `error`. A reasoning item's `encrypted_content`
(complete in its `output_item.done`) ends its thinking block as the signature `responses.request` sends back as the
item next turn (`reasoning_signature`); the passthrough and Gemini drop such blocks by their `ccm.` prefix.

A `.done` carries the whole text or arguments: only what the deltas did not already send is forwarded, which covers
backends that send arguments only in `.done` events, or only in `output_item.done`. Arguments that do not parse as
an object when the call ends are completed with `tool_json.closing_suffix` (logged); non-stream arguments are
repaired with `tool_json.parse_arguments`. Stop reasons: `incomplete_details.reason` max_output_tokens →
`max_tokens`, content_filter or a refusal part → `refusal`, calls → `tool_use`, else `end_turn`. Usage: input =
input_tokens − cached, cache_read = cached, output = output_tokens. A stream that ends before a terminal event was
cut short (`UpstreamError` reason `truncated`). Call ids follow the writer's tool-id policy (`reply`): `call_id` when
valid, encoded when not (decoded again by the request translation), minted when missing or repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from ccm.errors import UpstreamError
from ccm.providers.base import Usage
from ccm.providers.reply import EventWriter, fold_message, parse_event
from ccm.providers.responses.request import reasoning_signature
from ccm.providers.tool_json import closing_suffix, parse_arguments
from ccm.providers.tool_names import RESPONSES, ToolNames
from ccm.upstream.errors import classified, truncated_error
from ccm.upstream.sse import ServerEvent
from ccm.usage import from_openai_responses

log = logging.getLogger("ccm.providers.responses.adapter")

Json = dict[str, Any]


class ResponsesReader:
    """Responses stream events in, Anthropic events out through `writer` (a `StreamTranslator`)."""

    def __init__(
        self, provider: str, model: str, usage: Usage, names: ToolNames | None = None, input_tokens: int | None = None
    ) -> None:
        self.provider = provider
        self.writer = EventWriter(model, usage, input_estimate=input_tokens)
        self.names = names or ToolNames(RESPONSES)
        self._calls: dict[int, _CallState] = {}
        self._texts: set[tuple[int, int]] = set()  # (output_index, content_index) that streamed text deltas
        self._summary: tuple[int, int] | None = None  # the reasoning summary part being streamed
        self._refused = False

    def feed(self, event: ServerEvent) -> None:
        data = parse_event(self.provider, event)
        kind = data.get("type") or event.event or ""
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, data)

    def finish(self) -> None:
        if not self.writer.finished:
            raise truncated_error(self.provider, "the stream ended before response.completed")

    # --- items ---

    def _item_added(self, data: Json) -> None:
        item = data.get("item") or {}
        if item.get("type") == "function_call":
            call_id = self.writer.tool_id(item.get("call_id") or item.get("id"))
            state = _CallState(call_id, self.names.client(str(item.get("name", ""))))
            self._calls[_index(data)] = state
            self.writer.start_tool(state.call_id, state.name)
            self._arguments(state, item.get("arguments") or "", complete=False)

    def _item_done(self, data: Json) -> None:
        item = data.get("item") or {}
        index = _index(data)
        if item.get("type") == "function_call":
            if index not in self._calls:  # a backend that sends only finished items
                self._item_added(data)
            self._arguments(self._calls[index], item.get("arguments") or "", complete=True)
        elif item.get("type") == "message":
            for content_index, part in enumerate(item.get("content") or ()):
                self._late_text(index, content_index, part.get("text") or part.get("refusal") or "")
        elif item.get("type") == "reasoning":
            _carry_reasoning(item, self.writer)  # the done item holds the complete encrypted content

    def _arguments_delta(self, data: Json) -> None:
        state = self._calls.get(_index(data))
        if state is not None:
            self._arguments(state, data.get("delta") or "", complete=False)

    def _arguments_done(self, data: Json) -> None:
        state = self._calls.get(_index(data))
        if state is not None:
            self._arguments(state, data.get("arguments") or "", complete=True)

    def _arguments(self, state: _CallState, text: str, *, complete: bool) -> None:
        if state.closed:
            return
        if complete:
            # A `.done` carries the whole arguments: send what the deltas did not.
            text = text[len(state.sent) :] if text.startswith(state.sent) else ""
        if text:
            self.writer.tool_arguments(text)
            state.sent += text
        if complete:
            suffix = closing_suffix(state.sent)
            if suffix:
                if state.sent.strip():
                    log.warning("completed malformed tool-call arguments from %s for %s", self.provider, state.name)
                self.writer.tool_arguments(suffix)
            self.writer.close()
            state.closed = True

    # --- text and reasoning ---

    def _text_delta(self, data: Json) -> None:
        self._texts.add((_index(data), data.get("content_index", 0)))
        self.writer.text(data.get("delta") or "")

    def _text_done(self, data: Json) -> None:
        self._late_text(_index(data), data.get("content_index", 0), data.get("text") or "")

    def _late_text(self, index: int, content_index: int, text: str) -> None:
        if (index, content_index) not in self._texts:
            self._texts.add((index, content_index))
            self.writer.text(text)

    def _refusal_delta(self, data: Json) -> None:
        self._refused = True
        self._text_delta(data)

    def _summary_delta(self, data: Json) -> None:
        part = (_index(data), data.get("summary_index", 0))
        if self._summary is not None and self._summary != part and self._summary[0] == part[0]:
            self.writer.thinking("\n\n")  # summary parts are paragraphs of one reasoning item
        self._summary = part
        self.writer.thinking(data.get("delta") or "")

    def _reasoning_delta(self, data: Json) -> None:
        self.writer.thinking(data.get("delta") or "")

    # --- the end ---

    def _completed(self, data: Json) -> None:
        response = data.get("response") or {}
        _read_usage(response.get("usage"), self.writer.usage)
        self.writer.finish(_stop_reason(response, self.writer.saw_tool_use, self._refused))

    def _failed(self, data: Json) -> None:
        response = data.get("response") or {}
        raise _error(self.provider, response.get("error") or {})

    def _error(self, data: Json) -> None:
        error = data.get("error")
        raise _error(self.provider, error if isinstance(error, dict) else data)


class _CallState:
    __slots__ = ("call_id", "name", "sent", "closed")

    def __init__(self, call_id: str, name: str) -> None:
        self.call_id = call_id
        self.name = name
        self.sent = ""
        self.closed = False


_HANDLERS = {
    "response.output_item.added": ResponsesReader._item_added,
    "response.output_item.done": ResponsesReader._item_done,
    "response.function_call_arguments.delta": ResponsesReader._arguments_delta,
    "response.function_call_arguments.done": ResponsesReader._arguments_done,
    "response.output_text.delta": ResponsesReader._text_delta,
    "response.output_text.done": ResponsesReader._text_done,
    "response.refusal.delta": ResponsesReader._refusal_delta,
    "response.reasoning_summary_text.delta": ResponsesReader._summary_delta,
    "response.reasoning_text.delta": ResponsesReader._reasoning_delta,
    "response.completed": ResponsesReader._completed,
    "response.incomplete": ResponsesReader._completed,
    "response.failed": ResponsesReader._failed,
    "error": ResponsesReader._error,
}


def _carry_reasoning(item: Mapping[str, Any], writer: EventWriter) -> None:
    """A reasoning item's encrypted content, as the signature ending its thinking block (a block holding only the
    signature when no summary came), so that Claude Code sends it back next turn."""
    encrypted = item.get("encrypted_content")
    if isinstance(encrypted, str) and encrypted and isinstance(item.get("id"), str):
        writer.signature(reasoning_signature(item["id"], encrypted))


def _index(data: Mapping[str, Any]) -> int:
    value = data.get("output_index")
    return value if isinstance(value, int) else 0


def _stop_reason(response: Mapping[str, Any], saw_tool_use: bool, refused: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        if reason == "max_output_tokens":
            return "max_tokens"
        if reason == "content_filter":
            return "refusal"
    if refused:
        return "refusal"
    return "tool_use" if saw_tool_use else "end_turn"


def _read_usage(raw: Any, usage: Usage) -> None:
    if isinstance(raw, dict):
        usage.take(from_openai_responses(raw))


def _error(provider: str, error: Mapping[str, Any]) -> UpstreamError:
    code = str(error.get("code") or error.get("type") or "")
    message = f"upstream {provider!r} failed: {error.get('message') or code or 'unknown error'}"
    if "rate_limit" in code:
        return classified(provider, 429, message)
    if code in ("server_error", "internal_error", "") or "overloaded" in code:
        return classified(provider, 500, message)
    return classified(provider, 400, message)


def read_response(data: Json, provider: str, model: str, usage: Usage, names: ToolNames | None = None) -> Json:
    """A non-stream Responses object as a complete Anthropic message."""
    names = names or ToolNames(RESPONSES)
    if data.get("status") == "failed":
        raise _error(provider, data.get("error") or {})
    writer = EventWriter(model, usage)
    refused = False
    for item in data.get("output") or ():
        kind = item.get("type")
        if kind == "reasoning":
            summary = [s.get("text", "") for s in item.get("summary") or () if s.get("text")]
            raw = [c.get("text", "") for c in item.get("content") or () if c.get("text")]
            writer.thinking("\n\n".join(summary or raw))
            _carry_reasoning(item, writer)
        elif kind == "message":
            for part in item.get("content") or ():
                refused = refused or part.get("type") == "refusal"
                writer.text(part.get("text") or part.get("refusal") or "")
        elif kind == "function_call":
            arguments, outcome = parse_arguments(item.get("arguments") or "")
            if outcome != "valid" and item.get("arguments"):
                log.warning("%s tool-call arguments from %s for %s", outcome, provider, item.get("name"))
            call_id = writer.tool_id(item.get("call_id") or item.get("id"))
            writer.tool_use(call_id, names.client(str(item.get("name", ""))), orjson.dumps(arguments).decode())
    _read_usage(data.get("usage"), usage)
    writer.finish(_stop_reason(data, writer.saw_tool_use, refused))
    return fold_message(writer.take())
