"""Anthropic Messages request → OpenAI Chat Completions request: one pure function, `translate_request`.

Choices every OpenAI-compatible server accepts (PROTOCOL.md §6 and §8 are the spec):

- System: the top-level `system` and every `system`-role message found inside `messages` (Claude Code puts one after
  the first user message) are merged, in order, into ONE leading `system` message: many servers reject a system
  message that is not first. Claude Code's `x-anthropic-billing-header` block is dropped: it means nothing to other
  models and it changes between requests, which would defeat the upstream's prefix cache for the whole prompt.
- Content that is only text is sent as a plain string (text blocks joined by a blank line): some servers accept
  content-part lists only for user messages, or not at all. Lists are used when there is an image or a file, or when
  the model has the `keep_cache_control` quirk and a block carries `cache_control` (kept on content parts only).
- Consecutive turns of one role are merged (Anthropic's own semantics; strict chat templates demand alternation).
- `tool_result` blocks become `tool` messages right after the assistant message that called them, before the rest
  of the user turn; every tool call is answered (a call without a result gets a placeholder answer, a result
  without a call becomes user text). Images and PDFs inside a result move to the following user message and leave a
  placeholder in the tool message, because `tool` messages carry text only.
- `reasoning_effort` is sent only when the client explicitly enabled thinking with a budget
  (`thinking.type == "enabled"`): `output_config.effort` when given, else the budget bucketed like CCR
  (≤1024 low, ≤8192 medium, else high); xhigh/max become "high", the highest value every reasoning server accepts.
  Adaptive thinking (every Claude Code request) sends nothing, so non-reasoning models never fail on it; a model
  that should always reason says so with `force {reasoning_effort = "high"}`.
- `max_tokens` is clamped to the model's `max_output` and sent as `max_tokens`, which every server takes but OpenAI's
  reasoning models; for those, quirk `max_completion_tokens` sends the same clamped value under that name
  (`force {max_completion_tokens = N}` sets a fixed one, `drop max_tokens` sends no limit). `tool_choice: auto` is
  omitted (it is the default, and some servers reject the field). Server tools (`web_search_…`) are removed.
- Every field not listed in §6 is dropped (an allow-list, so new Anthropic-only fields never leak). The upstream
  model id is `model.model`. The model's `force` and `drop` apply last (`reply.apply_overrides`, dotted paths for
  nested fields).

Tool names that break `^[a-zA-Z0-9_-]{1,64}$` are rewritten by `tool_names` (rule `CHAT`); the returned `ToolNames`
maps them back.
Tool ids in the history are decoded with `tool_ids.upstream_tool_id`, the inverse of the id policy the reply side
applies (an id Anthropic would reject, like kimi's `functions.Bash:0`, reached the client encoded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson

from ccm.providers.request import (
    BILLING_HEADER,
    apply_overrides,
    client_identity,
    search_result_text,
    tool_parameters,
    tool_reference_text,
)
from ccm.providers.tool_ids import upstream_tool_id
from ccm.providers.tool_names import CHAT, ToolNames, upstream_name
from ccm.table import Model

MAX_STOP = 4  # OpenAI rejects more than four stop sequences
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
EMPTY_RESULT = "(no output)"
UNANSWERED = "(no result: the tool call was interrupted)"

Json = dict[str, Any]


# --- the request --------------------------------------------------------------------------------------------------


def translate_request(body: Mapping[str, Any], model: Model) -> tuple[Json, ToolNames]:
    keep_cache = "keep_cache_control" in model.quirks
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") in (None, "custom")]
    names = ToolNames.for_request(body, CHAT)
    out: Json = {"model": model.model}

    system_parts = _system_parts(body.get("system"), keep_cache)
    conversation: list[Mapping[str, Any]] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        if message.get("role") == "system":
            system_parts += _text_parts(_blocks(message.get("content")), keep_cache)
        else:
            conversation.append(message)
    messages: list[Json] = []
    if system_parts:
        messages.append({"role": "system", "content": _content(system_parts)})
    writer = _MessageWriter(messages, keep_cache, "replay_reasoning" in model.quirks)
    for role, blocks in _merged_turns(conversation):
        if role == "assistant":
            writer.assistant(blocks)
        else:
            writer.user(blocks)
    writer.answer_pending()
    out["messages"] = messages

    if tools:
        out["tools"] = [_function(t) for t in tools]
        choice = _tool_choice(body.get("tool_choice"), {t.get("name") for t in tools})
        if choice is not None:
            out["tool_choice"] = choice
        tool_choice = body.get("tool_choice")
        if isinstance(tool_choice, dict) and tool_choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False

    effort = reasoning_effort(body)
    if effort:
        out["reasoning_effort"] = effort
    max_tokens = body.get("max_tokens")
    if _is_int(max_tokens):
        out["max_tokens"] = min(max_tokens, model.max_output) if model.max_output else max_tokens
    for name in ("temperature", "top_p"):
        if _is_number(body.get(name)):
            out[name] = body[name]
    stop_sequences = body.get("stop_sequences")
    stop = [s for s in stop_sequences if isinstance(s, str) and s] if isinstance(stop_sequences, list) else []
    if stop:
        out["stop"] = stop[:MAX_STOP]
    identity = client_identity(body)
    if "prompt_cache_key" in model.quirks:  # the fields OpenAI documents now, which not every compatible server takes
        if identity.session:
            out["prompt_cache_key"] = identity.session
        if identity.user:
            out["safety_identifier"] = identity.user
    elif identity.session:
        out["user"] = identity.session  # every server takes `user`; the raw user_id is a JSON fragment
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    if "max_completion_tokens" in model.quirks and "max_tokens" in out:
        out["max_completion_tokens"] = out.pop("max_tokens")  # the server wants the newer field (OpenAI o/gpt-5 series)
    return apply_overrides(out, model.force, model.drop), names


def reasoning_effort(body: Mapping[str, Any]) -> str | None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    return effort_level(body, thinking)


def effort_level(body: Mapping[str, Any], thinking: Mapping[str, Any]) -> str | None:
    """The OpenAI effort a thinking request asks for: `output_config.effort` (xhigh/max → high), else the budget
    bucketed ≤1024 low, ≤8192 medium, else high; None when it names neither."""
    output_config = body.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if isinstance(effort, str) and effort in EFFORTS:
        return EFFORTS[effort]
    budget = thinking.get("budget_tokens")
    if not _is_int(budget):
        return None
    return "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"


def _function(tool: Json) -> Json:
    parameters = tool_parameters(tool.get("input_schema"))
    function: Json = {"name": upstream_name(str(tool.get("name", "")), CHAT)}
    if isinstance(tool.get("description"), str) and tool["description"]:
        function["description"] = tool["description"]
    function["parameters"] = parameters
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, offered: set[Any]) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and choice.get("name") in offered:
        return {"type": "function", "function": {"name": upstream_name(choice["name"], CHAT)}}
    return None  # auto (the default) or a tool that is not offered upstream


# --- content ------------------------------------------------------------------------------------------------------


def _blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _merged_turns(messages: list[Mapping[str, Any]]) -> list[tuple[str, list[Json]]]:
    turns: list[tuple[str, list[Json]]] = []
    for message in messages:
        role = "assistant" if message.get("role") == "assistant" else "user"
        blocks = _blocks(message.get("content"))
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))
    return turns


def _system_parts(system: Any, keep_cache: bool) -> list[Json]:
    blocks = _blocks(system)
    if blocks and str(blocks[0].get("text", "")).startswith(BILLING_HEADER):
        blocks = blocks[1:]
    return _text_parts(blocks, keep_cache)


def _text_parts(blocks: list[Json], keep_cache: bool) -> list[Json]:
    return [p for p in (_text_part(b, keep_cache) for b in blocks) if p is not None]


def _text_part(block: Json, keep_cache: bool) -> Json | None:
    text = block.get("text")
    if not isinstance(text, str) or not text:
        return None  # empty text blocks are rejected downstream (pitfall 1)
    return _with_cache({"type": "text", "text": text}, block, keep_cache)


def _with_cache(part: Json, block: Json, keep_cache: bool) -> Json:
    if keep_cache and isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]
    return part


def _content(parts: list[Json]) -> str | list[Json]:
    """A plain string when every part is cache-free text, else the part list."""
    if all(p["type"] == "text" and "cache_control" not in p for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _image_part(block: Json) -> Json | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _document_parts(block: Json) -> list[Json]:
    """A PDF becomes a `file` part (a URL goes in `file_data`, as OpenRouter accepts); text documents become text."""
    source = block.get("source")
    if not isinstance(source, dict):
        return []
    title = block.get("title") if isinstance(block.get("title"), str) else None
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        data = f"data:{source.get('media_type', 'application/pdf')};base64,{source['data']}"
        return [{"type": "file", "file": {"filename": title or "document.pdf", "file_data": data}}]
    if kind == "url" and isinstance(source.get("url"), str):
        return [{"type": "file", "file": {"filename": title or "document.pdf", "file_data": source["url"]}}]
    if kind == "text" and isinstance(source.get("data"), str):
        texts = [source["data"]]
    elif kind == "content":
        texts = [t for t in (b.get("text") for b in _blocks(source.get("content"))) if isinstance(t, str)]
    else:
        return []
    text = "\n\n".join(t for t in ([title] if title else []) + texts if t)
    return [{"type": "text", "text": text}] if text else []


def _user_parts(block: Json, keep_cache: bool) -> list[Json]:
    kind = block.get("type")
    if kind == "text":
        part = _text_part(block, keep_cache)
        return [part] if part else []
    if kind == "image":
        image = _image_part(block)
        return [image] if image else [{"type": "text", "text": "[image omitted: unsupported source]"}]
    if kind == "document":
        return _document_parts(block)
    if kind == "search_result":
        text = search_result_text(block)
        return [{"type": "text", "text": text}] if text else []
    return []  # thinking and server-tool blocks mean nothing to an OpenAI upstream


class _MessageWriter:
    """Appends OpenAI messages turn by turn, keeping the tool-call bookkeeping OpenAI's ordering rule needs."""

    def __init__(self, out: list[Json], keep_cache: bool, replay_reasoning: bool) -> None:
        self.out = out
        self.keep_cache = keep_cache
        self.replay_reasoning = replay_reasoning
        self.pending: list[str] = []  # upstream ids of the last assistant tool calls not answered yet

    def assistant(self, blocks: list[Json]) -> None:
        self.answer_pending()
        texts: list[Json] = []
        calls: list[Json] = []
        reasoning: list[str] = []
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                part = _text_part(block, self.keep_cache)
                if part:
                    texts.append(part)
            elif kind == "tool_use":
                call_id = upstream_tool_id(str(block.get("id", "")))
                arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {})
                function = {"name": upstream_name(str(block.get("name", "")), CHAT), "arguments": arguments.decode()}
                calls.append({"id": call_id, "type": "function", "function": function})
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                reasoning.append(block["thinking"])
        if not texts and not calls:
            return  # nothing an OpenAI server would accept (an assistant turn needs content or tool_calls)
        message: Json = {"role": "assistant", "content": _content(texts) if texts else None}
        if calls:
            message["tool_calls"] = calls
        if self.replay_reasoning:
            # DeepSeek's thinking mode rejects a request when any assistant message of a turn that called tools
            # lacks the field, the turn's final text answer included, and keeps rejecting it in every later request
            # (PROTOCOL §8 pitfall 8). `""` satisfies it, and turns without tool calls ignore it, so every
            # assistant message carries it.
            message["reasoning_content"] = "\n\n".join(reasoning)
        self.out.append(message)
        self.pending = [c["id"] for c in calls]

    def user(self, blocks: list[Json]) -> None:
        moved: list[Json] = []  # media from tool results, for the user message after the tool messages
        rest: list[Json] = []
        for block in blocks:
            if block.get("type") != "tool_result":
                rest += _user_parts(block, self.keep_cache)
                continue
            call_id = upstream_tool_id(str(block.get("tool_use_id", "")))
            text, media = self._result(block)
            if call_id in self.pending:
                self.pending.remove(call_id)
                content: Any = text
                if self.keep_cache and isinstance(block.get("cache_control"), dict):
                    content = [{"type": "text", "text": text, "cache_control": block["cache_control"]}]
                self.out.append({"role": "tool", "tool_call_id": call_id, "content": content})
                moved += media
            else:
                # A result whose call is not in the previous turn: OpenAI would reject a `tool` message here.
                rest += [{"type": "text", "text": f"[result of tool call {call_id}]\n{text}"}, *media]
        self.answer_pending()
        parts = moved + rest
        if parts:
            self.out.append({"role": "user", "content": _content(parts)})

    def answer_pending(self) -> None:
        for call_id in self.pending:
            self.out.append({"role": "tool", "tool_call_id": call_id, "content": UNANSWERED})
        self.pending = []

    def _result(self, block: Json) -> tuple[str, list[Json]]:
        """The tool message text and the media parts that must travel in a user message instead."""
        texts: list[str] = []
        media: list[Json] = []
        for item in _blocks(block.get("content")):
            kind = item.get("type")
            if kind == "image":
                image = _image_part(item)
                if image:
                    media.append(image)
                    texts.append(f"[image {len(media)}: attached in the next user message]")
            elif kind == "document":
                for part in _document_parts(item):
                    if part["type"] == "text":
                        texts.append(part["text"])
                    else:
                        media.append(part)
                        texts.append(f"[document {len(media)}: attached in the next user message]")
            elif kind == "search_result":
                texts.append(search_result_text(item))
            elif kind == "tool_reference":
                texts.append(tool_reference_text(item))
            elif isinstance(item.get("text"), str):
                texts.append(item["text"])
        text = "\n\n".join(t for t in texts if t) or EMPTY_RESULT
        if block.get("is_error") is True:
            text = "Error: " + text
        return text, media


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
