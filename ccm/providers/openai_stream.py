"""OpenAI Chat Completions stream → Anthropic Messages stream: the state machine of PROTOCOL.md §6, pure.

`StreamTranslator.feed(raw)` takes upstream body bytes as they arrive, split anywhere, and yields the Anthropic
SSE bytes of each event they complete, at once; `finish()` flushes at EOF. Framing (`: comment` lines, CRLF,
multi-line `data`) is `ccm.sse.SSEDecoder`'s job; `feed_event(data)` is the state machine proper, one event's
`data` at a time.

- `message_start` goes out on the first chunk (usage zeros, both cache fields included); block indices are
  contiguous from 0 and exactly one block is open at a time. A delta of another kind (reasoning ⇄ text ⇄ tool) closes
  the open block and opens the next one, then carries the delta that triggered the switch. Blank deltas open nothing.
- Reasoning arrives as `reasoning_content` (DeepSeek, vLLM, SGLang) or `reasoning` (OpenRouter) and becomes a
  `thinking` block with an empty signature; reasoning and content in one chunk are emitted in that order.
- Tool calls are keyed on `tool_calls[].index`; a new index or a new non-empty `id` starts a new `tool_use` block
  (parallel calls, and Gemini-style streams that put every call at index 0). A block starts once the name is known;
  each `arguments` fragment is forwarded verbatim as an `input_json_delta`. At the block's end, arguments that do
  not parse get the closing text that makes them parse when appending can fix them (`tool_json.closing_suffix`:
  none at all becomes `{}`, a cut-off object is closed).
- `finish_reason` closes the open block; the `message_delta` is held until the usage chunk (`choices: []`), `[DONE]`
  or EOF, so a later chunk may still rewrite the finish reason (OpenRouter) or bring usage (zeros when none came).
  Stop reasons follow §6 (tool calls seen win over `stop`, `""` and a missing finish are inferred). Nothing is
  emitted after `message_stop`.
- `data: {"error": …}` raises `UpstreamError` (the adapter's caller turns it into a real status before the first
  output, an `event: error` frame after); a data line that is not JSON raises one with reason "protocol".

The helpers shared with the non-streaming translation (`ReplyContext`, `stop_reason`, `usage_from`,
`embedded_error`) live here too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccm.errors import UpstreamError
from ccm.providers.base import Usage
from ccm.providers.http import upstream_error
from ccm.providers.openai_translate import ToolNames, client_tool_id
from ccm.providers.tool_json import closing_suffix
from ccm.sse import SSEDecoder, encode_event

log = logging.getLogger("ccm.providers.openai")

_EMPTY_THINKING = {"type": "thinking", "thinking": "", "signature": ""}
_EMPTY_TEXT = {"type": "text", "text": ""}


# --- shared with the non-streaming translation --------------------------------------------------------------------


@dataclass(slots=True)
class ReplyContext:
    """What translating one reply needs besides the upstream's data. `model` is the name the client asked for:
    Claude Code compares it with what it requested, so replies echo it (the upstream id is in the logs)."""

    model: str
    names: ToolNames = field(default_factory=ToolNames)
    message_id: str = ""
    stop_sequences: tuple[str, ...] = ()
    provider: str = ""
    _tool_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.message_id:
            self.message_id = "msg_" + uuid.uuid4().hex[:24]

    def tool_id(self, upstream_id: str | None) -> str:
        """The client's id for a tool call: the upstream's when Anthropic accepts it, an encoded form when not,
        minted (from the message id, so tests are reproducible) when missing or repeated within the reply."""
        candidate = client_tool_id(upstream_id) if upstream_id else ""
        if not candidate or candidate in self._tool_ids:
            candidate = f"toolu_{self.message_id.removeprefix('msg_')}_{len(self._tool_ids)}"
        self._tool_ids.add(candidate)
        return candidate

    def matched_stop(self, value: Any) -> str | None:
        """vLLM and SGLang name the stop string that ended the output in the choice's `stop_reason`."""
        return value if isinstance(value, str) and value in self.stop_sequences else None


def stop_reason(finish: str | None, tool_calls: bool, stop_string: str | None = None) -> str:
    if finish == "length":
        return "max_tokens"
    if finish == "content_filter":
        return "refusal"
    if tool_calls:
        return "tool_use"  # also for `stop` or no finish after tool calls (Ollama, gpt-4o, SGLang)
    if stop_string:
        return "stop_sequence"
    return "end_turn"


def usage_from(raw: Mapping[str, Any], into: Usage) -> None:
    """OpenAI usage → Anthropic's, in place: `input_tokens` excludes the cached part (PROTOCOL §6)."""
    details = raw.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cache_read = _int(details.get("cached_tokens")) or _int(raw.get("prompt_cache_hit_tokens"))
    cache_write = _int(details.get("cache_write_tokens"))
    into.input_tokens = max(_int(raw.get("prompt_tokens")) - cache_read - cache_write, 0)
    into.output_tokens = _int(raw.get("completion_tokens"))
    into.cache_read_input_tokens = cache_read
    into.cache_creation_input_tokens = cache_write


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def embedded_error(provider: str, error: Any) -> UpstreamError:
    """An error object inside a 200 answer or a stream. A numeric `code` (OpenRouter relays the real HTTP status)
    is mapped like an HTTP error; anything else is a protocol failure (502)."""
    body = orjson.dumps({"error": error})
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return upstream_error(provider, code, body, {})
    message = error.get("message") if isinstance(error, dict) else error
    text = message if isinstance(message, str) and message else "upstream reported an error"
    return UpstreamError(502, f"upstream error: {text}", reason="protocol", provider=provider, error_type="api_error")


def protocol_error(provider: str, what: str) -> UpstreamError:
    return UpstreamError(502, f"upstream sent an invalid response: {what}", reason="protocol", provider=provider,
                         error_type="api_error")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# --- the stream ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ToolCall:
    key: int  # the upstream's `tool_calls[].index`
    upstream_id: str | None
    name: str
    arguments: list[str] = field(default_factory=list)
    started: bool = False


class StreamTranslator:
    def __init__(self, context: ReplyContext) -> None:
        self.context = context
        self.usage = Usage()  # updated in place as usage arrives: the adapter hands this object to the core
        self.started = False
        self.done = False
        self._decoder = SSEDecoder()
        self._kind: str | None = None  # "thinking" | "text" | "tool" while a block is open (or a tool is pending)
        self._index = -1
        self._tool: _ToolCall | None = None
        self._finish: str | None = None
        self._stop_string: str | None = None
        self._saw_tool_calls = False

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The output of each upstream event that `raw` completes, as soon as it is translated."""
        for event in self._decoder.feed(raw):
            if self.done:
                return
            output = self.feed_event(event.data)
            if output:
                yield output

    def finish(self) -> Iterator[bytes]:
        """End of the upstream body: flush what is held. EOF before any chunk is an error."""
        for event in self._decoder.flush():
            output = b"" if self.done else self.feed_event(event.data)
            if output:
                yield output
        if not self.done:
            out: list[bytes] = []
            self._end(out)
            yield b"".join(out)

    def feed_event(self, data: str) -> bytes:
        if self.done:
            return b""
        if data.strip() == "[DONE]":
            out: list[bytes] = []
            self._end(out)
            return b"".join(out)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise protocol_error(self.context.provider, "a stream event is not JSON") from None
        if not isinstance(chunk, dict):
            raise protocol_error(self.context.provider, "a stream event is not a JSON object")
        if chunk.get("error"):
            raise embedded_error(self.context.provider, chunk["error"])
        out = []
        if not self.started:
            self.started = True
            out.append(self._message_start())
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            x_groq = chunk.get("x_groq")  # Groq reports usage there
            usage = x_groq.get("usage") if isinstance(x_groq, dict) else None
        if isinstance(usage, dict):
            usage_from(usage, self.usage)
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None:
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self._finish = finish
                self._close(out)
            self._stop_string = self.context.matched_stop(choice.get("stop_reason")) or self._stop_string
        elif self._finish is not None and isinstance(usage, dict):
            self._end(out)  # the include_usage chunk: the last one before [DONE]
        return b"".join(out)

    # --- deltas -----------------------------------------------------------------------------------------------

    def _delta(self, delta: Mapping[str, Any], out: list[bytes]) -> None:
        reasoning = delta.get("reasoning_content")
        if not isinstance(reasoning, str) or not reasoning:
            reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._text("thinking", reasoning, out)
        content = delta.get("content")
        if isinstance(content, list):  # content parts (Mistral): keep the text ones
            content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(content, str) and content:
            self._text("text", content, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._text("text", refusal, out)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool_delta(call, out)

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        if self._kind != kind:
            self._close(out)
            self._kind = kind
            self._index += 1
            block = _EMPTY_THINKING if kind == "thinking" else _EMPTY_TEXT
            out.append(_event("content_block_start", {"type": "content_block_start", "index": self._index,
                                                      "content_block": block}))
        if kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": text}
        else:
            delta = {"type": "text_delta", "text": text}
        out.append(_event("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                                  "delta": delta}))

    def _tool_delta(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        tool = self._tool if self._kind == "tool" else None
        index = call.get("index")
        key = index if isinstance(index, int) and not isinstance(index, bool) else (tool.key if tool else 0)
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name") if isinstance(function.get("name"), str) else ""
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send the arguments as an object
            arguments = orjson.dumps(arguments).decode()
        arguments = arguments if isinstance(arguments, str) else ""

        if tool is None or key != tool.key or (call_id and tool.upstream_id and call_id != tool.upstream_id):
            self._close(out)
            tool = _ToolCall(key, call_id, name)
            self._tool, self._kind = tool, "tool"
        else:
            tool.upstream_id = tool.upstream_id or call_id
            tool.name = tool.name or name
        if arguments:
            tool.arguments.append(arguments)
        if not tool.started and tool.name:
            tool.started = self._saw_tool_calls = True
            self._index += 1
            block = {"type": "tool_use", "id": self.context.tool_id(tool.upstream_id),
                     "name": self.context.names.anthropic(tool.name), "input": {}}
            out.append(_event("content_block_start", {"type": "content_block_start", "index": self._index,
                                                      "content_block": block}))
            for fragment in tool.arguments:  # fragments that arrived before the name
                out.append(self._json_delta(fragment))
        elif tool.started and arguments:
            out.append(self._json_delta(arguments))

    def _json_delta(self, fragment: str) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                              "delta": {"type": "input_json_delta", "partial_json": fragment}})

    # --- block and message ends -------------------------------------------------------------------------------

    def _close(self, out: list[bytes]) -> None:
        if self._kind == "tool" and self._tool is not None:
            tool = self._tool
            if not tool.started:
                log.warning("dropped a tool call without a name from %s", self.context.provider or "upstream")
                self._kind, self._tool = None, None
                return
            arguments = "".join(tool.arguments)
            suffix = closing_suffix(arguments)
            if suffix:
                if arguments.strip():
                    log.warning("completed cut-off tool arguments for %s (%d chars)", tool.name, len(arguments))
                out.append(self._json_delta(suffix))
            self._tool = None
        if self._kind is not None:
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._kind = None

    def _end(self, out: list[bytes]) -> None:
        if not self.started:
            raise protocol_error(self.context.provider, "the stream ended before any event")
        self._close(out)
        reason = stop_reason(self._finish, self._saw_tool_calls, self._stop_string)
        stop_sequence = self._stop_string if reason == "stop_sequence" else None
        out.append(_event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
                                            "usage": usage_json(self.usage)}))
        out.append(_event("message_stop", {"type": "message_stop"}))
        self.done = True

    def _message_start(self) -> bytes:
        message = {
            "id": self.context.message_id, "type": "message", "role": "assistant", "content": [],
            "model": self.context.model, "stop_reason": None, "stop_sequence": None,
            "usage": usage_json(Usage()),
        }
        return _event("message_start", {"type": "message_start", "message": message})


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return encode_event(name, orjson.dumps(payload))

