"""OpenAI Chat Completions stream → Anthropic Messages events: the state machine of PROTOCOL.md §6, pure.

`StreamTranslator` is a `reply.StreamTranslator`: `feed(event)` takes one decoded upstream SSE event and writes the
Anthropic events it implies through its `EventWriter`; `finish()` ends the reply at EOF. The relay around it
(`reply.stream_reply`) does the SSE framing, the encoding and the priming.

- `message_start` goes out on the first chunk (usage zeros, both cache fields included); the writer keeps block
  indices contiguous and exactly one block open. A delta of another kind (reasoning ⇄ text ⇄ tool) closes the open
  block and opens the next one, then carries the delta that triggered the switch. Blank deltas open nothing.
- Reasoning arrives as `reasoning_content` (DeepSeek, vLLM, SGLang) or `reasoning` (OpenRouter) and becomes a
  `thinking` block with an empty signature; reasoning and content in one chunk are emitted in that order.
- Tool calls are keyed on `tool_calls[].index`; a new index or a new non-empty `id` starts a new `tool_use` block
  (parallel calls, and Gemini-style streams that put every call at index 0). A block starts once the name is known;
  each `arguments` fragment is forwarded verbatim as an `input_json_delta`. At the block's end, arguments that do
  not parse get the closing text that makes them parse when appending can fix them (`tool_json.closing_suffix`:
  none at all becomes `{}`, a cut-off object is closed). Ids follow the writer's tool-id policy, names are mapped
  back through `ToolNames`.
- `finish_reason` closes the open block; the `message_delta` is held until the usage chunk (`choices: []`), `[DONE]`
  or EOF, so a later chunk may still rewrite the finish reason (OpenRouter) or bring usage (zeros when none came).
  Stop reasons follow §6 (tool calls seen win over `stop`, `""` and a missing finish are inferred). Events after
  `message_stop` are ignored.
- A body that ends with neither a `finish_reason` nor `[DONE]` was cut short: `UpstreamError` reason `truncated`,
  never a `message_stop` (the fragment would look complete). `[DONE]` alone is an end (some hosts send no finish).
- `data: {"error": …}` raises `UpstreamError` (the relay turns it into a real status before the first output, an
  `event: error` frame after); a data line that is not JSON raises one with reason "protocol".

The helpers shared with the non-streaming translation (`ReplyContext`, `stop_reason`,
`embedded_error`) live here too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccm.errors import UpstreamError
from ccm.frozen import frozen
from ccm.providers.base import Usage
from ccm.providers.reply import EventWriter, ended_early, fold_message
from ccm.providers.tool_json import closing_suffix, parse_arguments
from ccm.providers.tool_names import ToolNames
from ccm.upstream.errors import protocol_error, truncated_error, upstream_error
from ccm.upstream.sse import ServerEvent
from ccm.usage import from_openai_chat

log = logging.getLogger("ccm.providers.openai.adapter")

INVALID_RESPONSE = "upstream sent an invalid response: "


# --- shared with the non-streaming translation --------------------------------------------------------------------


@frozen
class ReplyContext:
    """What translating one reply needs besides the upstream's data. `model` is the name the client asked for:
    Claude Code compares it with what it requested, so replies echo it (the upstream id is in the logs).
    `message_id` is minted by the writer when empty."""

    model: str
    names: ToolNames = field(default_factory=ToolNames)
    message_id: str = ""
    stop_sequences: tuple[str, ...] = ()
    provider: str = ""
    input_tokens: int | None = None  # the core's estimate, for message_start (`Call.input_tokens`)

    def writer(self, usage: Usage) -> EventWriter:
        return EventWriter(self.model, usage, self.message_id or None, self.input_tokens)

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


def embedded_error(provider: str, error: Any) -> UpstreamError:
    """An error object inside a 200 answer or a stream. A numeric `code` (OpenRouter relays the real HTTP status)
    is mapped like an HTTP error; anything else is a protocol failure (502)."""
    body = orjson.dumps({"error": error})
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return upstream_error(provider, code, body, {})
    message = error.get("message") if isinstance(error, dict) else error
    text = message if isinstance(message, str) and message else "upstream reported an error"
    return protocol_error(provider, f"upstream error: {text}")


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
        self.provider = context.provider
        self.context = context
        # The writer's usage is updated in place as it arrives: the relay hands the same object to the core.
        self.writer = context.writer(Usage())
        self._tool: _ToolCall | None = None  # the current tool call, open or still waiting for its name
        self._finish: str | None = None
        self._stop_string: str | None = None

    def feed(self, event: ServerEvent) -> None:
        writer = self.writer
        if writer.finished:
            return
        data = event.data
        if data.strip() == "[DONE]":
            self._end()
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if not event.terminated and ended_early(data, exc):  # the body ended inside its last event
                raise truncated_error(self.provider, "a stream event stops before its end") from None
            raise protocol_error(self.provider, INVALID_RESPONSE + "a stream event is not JSON") from None
        if not isinstance(chunk, dict):
            raise protocol_error(self.provider, INVALID_RESPONSE + "a stream event is not a JSON object")
        if chunk.get("error"):
            raise embedded_error(self.provider, chunk["error"])
        writer.start()  # before reading usage: message_start reports zeros, the final usage comes in message_delta
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            x_groq = chunk.get("x_groq")  # Groq reports usage there
            usage = x_groq.get("usage") if isinstance(x_groq, dict) else None
        if isinstance(usage, dict):
            writer.usage.take(from_openai_chat(usage))
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None:
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self._finish = finish
                self._close()
            self._stop_string = self.context.matched_stop(choice.get("stop_reason")) or self._stop_string
        elif self._finish is not None and isinstance(usage, dict):
            self._end()  # the include_usage chunk: the last one before [DONE]

    def finish(self) -> None:
        """End of the upstream body before `[DONE]`. After a `finish_reason` the answer is complete and what is held
        goes out (its usage not final: the usage chunk never came); without one the stream was cut short."""
        if self.writer.finished:
            return
        if self._finish is None:
            raise truncated_error(self.provider, "the stream ended without a finish_reason or [DONE]")
        self._end(final=False)

    # --- deltas -----------------------------------------------------------------------------------------------

    def _delta(self, delta: Mapping[str, Any]) -> None:
        reasoning = delta.get("reasoning_content")
        if not isinstance(reasoning, str) or not reasoning:
            reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._end_tool()
            self.writer.thinking(reasoning)
        content = delta.get("content")
        if isinstance(content, list):  # content parts (Mistral): keep the text ones
            content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(content, str) and content:
            self._end_tool()
            self.writer.text(content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._end_tool()
            self.writer.text(refusal)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool_delta(call)

    def _tool_delta(self, call: Mapping[str, Any]) -> None:
        tool = self._tool
        writer = self.writer
        index = call.get("index")
        key = index if isinstance(index, int) and not isinstance(index, bool) else (tool.key if tool else 0)
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name: str = function["name"] if isinstance(function.get("name"), str) else ""
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send the arguments as an object
            arguments = orjson.dumps(arguments).decode()
        arguments = arguments if isinstance(arguments, str) else ""

        if tool is None or key != tool.key or (call_id and tool.upstream_id and call_id != tool.upstream_id):
            self._close()
            tool = self._tool = _ToolCall(key, call_id, name)
        else:
            tool.upstream_id = tool.upstream_id or call_id
            tool.name = tool.name or name
        if arguments:
            tool.arguments.append(arguments)
        if not tool.started and tool.name:
            tool.started = True
            writer.start_tool(writer.tool_id(tool.upstream_id), self.context.names.client(tool.name))
            for fragment in tool.arguments:  # fragments that arrived before the name
                writer.tool_arguments(fragment)
        elif tool.started and arguments:
            writer.tool_arguments(arguments)

    # --- block and message ends -------------------------------------------------------------------------------

    def _end_tool(self) -> None:
        """Ends the current tool call: its arguments completed if cut off, or the call dropped if it never got
        a name (there is no block to close then)."""
        tool, self._tool = self._tool, None
        if tool is None:
            return
        if not tool.started:
            log.warning("dropped a tool call without a name from %s", self.provider or "upstream")
            return
        arguments = "".join(tool.arguments)
        suffix = closing_suffix(arguments)
        if suffix:
            if arguments.strip():
                log.warning("completed cut-off tool arguments for %s (%d chars)", tool.name, len(arguments))
            self.writer.tool_arguments(suffix)
        self.writer.close()

    def _close(self) -> None:
        self._end_tool()
        self.writer.close()

    def _end(self, final: bool = True) -> None:
        if not self.writer.started:
            raise protocol_error(self.provider, INVALID_RESPONSE + "the stream ended before any event")
        self._close()
        reason = stop_reason(self._finish, self.writer.saw_tool_use, self._stop_string)
        self.writer.finish(reason, self._stop_string if reason == "stop_sequence" else None, final=final)


def translate_response(data: Mapping[str, Any], context: ReplyContext, usage: Usage) -> dict[str, Any]:
    """A complete Chat Completions answer → an Anthropic message (thinking, text, then tool_use blocks); `usage`
    is filled in place."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise protocol_error(context.provider, INVALID_RESPONSE + "the completion has no choices")
    choice = choices[0]
    message: Mapping[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
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
        usage.take(from_openai_chat(data["usage"]))
    finish = choice.get("finish_reason")
    stop_string = context.matched_stop(choice.get("stop_reason"))
    reason = stop_reason(finish if isinstance(finish, str) else None, writer.saw_tool_use, stop_string)
    writer.finish(reason, stop_string if reason == "stop_sequence" else None)
    return fold_message(writer.take())


def _tool_use(call: Any, context: ReplyContext, writer: EventWriter) -> None:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(function, dict) or not isinstance(name, str) or not name:
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
    writer.tool_use(writer.tool_id(call.get("id")), context.names.client(name), orjson.dumps(tool_input).decode())
