"""The OpenAI Responses adapter (`type openai-responses`): `POST {url}/responses` behind Anthropic Messages.

Request (`translate_request`, pure):
- System text (the `system` field and `system`-role messages, in order, without Claude Code's billing-header block)
  → `instructions`. Messages → `input` items, in the shapes the official `openai` types accept: user content →
  `input_text` / `input_image` / `input_file`, assistant text → a message whose content is a string (an
  `output_text` part belongs only in a complete output message, with an `id` and `status` ccm does not have),
  tool_use → `function_call`, tool_result → `function_call_output` (a string, or `input_text`/`input_image` items
  when the result holds images), placed right after their calls. Call ids go back as the API gave them
  (`tool_ids.upstream_tool_id` decodes the ones the reply side had to encode). Every call is answered (an
  interrupted call gets a placeholder output) and an output without its call becomes user text, since the API
  rejects both. Document titles travel as the file's name or ahead of the text.
- Encrypted reasoning: with `store: false` nothing is kept server-side, so a reasoning model's reasoning would be
  lost at every tool turn. Reasoning models are asked for it (`include: ["reasoning.encrypted_content"]`); the reply
  side hands each reasoning item to Claude Code as a thinking block whose signature is `SIGNATURE_PREFIX` + the
  item's id and encrypted content (as JSON), and such a block goes back here as the `reasoning` item it was, before
  the call or text it came with (one with nothing after it in its turn is dropped: the API refuses it). Every other
  thinking block is dropped; the prefix lets the other adapters recognise these and drop them.
- Function tools are flat `{type: "function", name, description, parameters, strict: false}`, names outside
  `^[a-zA-Z0-9_-]{1,64}$` rewritten by `tool_names` (rule `RESPONSES`, mapped back by the reply) — Responses makes
  `strict` default to true, which Claude Code's schemas do not satisfy — with `$schema` removed as on the other
  adapters. Server tools are dropped.
- Who is asking: `prompt_cache_key` is Claude Code's session id (from `metadata.user_id`), `safety_identifier` a
  hash of the account or device (`request.client_identity`); never the raw `user_id`.
- What the Responses API has no field for is not sent and is said once per process in the log: `stop_sequences`,
  `top_k`.
- `tool_choice` auto/any/none/tool → "auto"/"required"/"none"/`{type: "function", name}`;
  `disable_parallel_tool_use` → `parallel_tool_calls: false`. `max_tokens` → `max_output_tokens`, clamped to the
  model's `max_output` (and raised to the API's minimum of 16). `store: false`: ccm keeps no server-side state.
- Reasoning: sent only to reasoning models — ids (after any `vendor/` prefix) starting `o1`, `o3`, `o4`, `gpt-5`,
  `codex` or `gpt-oss`, except `*-chat*` variants — and only when the client asks for thinking (`enabled`, or
  `adaptive`) with an effort or a budget. Effort is `output_config.effort` (xhigh/max → high, the highest value every
  reasoning model accepts), else the budget bucketed ≤1024 low, ≤8192 medium, else high. `summary: "detailed"` is
  added unless the client asked for `display: "omitted"`. Other models get no `reasoning`, so Claude Code's
  ever-present adaptive thinking never breaks them; `force { "reasoning.effort" = "high" }` overrides either way.
- `force`/`drop` apply last, to the Responses body.

The reply side (stream events and non-stream responses → Anthropic) is `responses.reply`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ccm.providers.openai.request import UNANSWERED, effort_level
from ccm.providers.request import (
    BILLING_HEADER,
    apply_overrides,
    client_identity,
    search_result_text,
    tool_parameters,
    tool_reference_text,
    unsupported,
)
from ccm.providers.tool_ids import upstream_tool_id
from ccm.providers.tool_names import RESPONSES, ToolNames
from ccm.table import Model

SIGNATURE_PREFIX = "ccm.responses."
ENCRYPTED_REASONING = "reasoning.encrypted_content"
_REASONING_MODEL = re.compile(r"^(o[134]|gpt-5|codex|gpt-oss)")
_MIN_OUTPUT_TOKENS = 16

Json = dict[str, Any]


# --- encrypted reasoning in a thinking block's signature ------------------------------------------------------------


def reasoning_signature(item_id: str, encrypted_content: str) -> str:
    """The signature of the thinking block that carries a reasoning item through Claude Code's history."""
    return SIGNATURE_PREFIX + orjson.dumps({"id": item_id, "encrypted_content": encrypted_content}).decode()


def reasoning_item(block: Mapping[str, Any]) -> Json | None:
    """The `reasoning` input item a thinking block carries, or None for any other thinking block."""
    signature = block.get("signature")
    if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
        return None
    try:
        carried = orjson.loads(signature[len(SIGNATURE_PREFIX) :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(carried, dict) or not isinstance(carried.get("id"), str):
        return None
    thinking = block.get("thinking")
    summary = [{"type": "summary_text", "text": thinking}] if isinstance(thinking, str) and thinking else []
    item: Json = {"type": "reasoning", "id": carried["id"]}
    if isinstance(carried.get("encrypted_content"), str):
        item["encrypted_content"] = carried["encrypted_content"]
    item["summary"] = summary
    return item


# --- request -------------------------------------------------------------------------------------------------------


def is_reasoning_model(model_id: str) -> bool:
    name = model_id.rsplit("/", 1)[-1].lower()
    return bool(_REASONING_MODEL.match(name)) and "-chat" not in name


def reasoning(body: Mapping[str, Any], model_id: str) -> Json | None:
    thinking = body.get("thinking")
    if not is_reasoning_model(model_id) or not isinstance(thinking, dict):
        return None
    if thinking.get("type") not in ("enabled", "adaptive"):
        return None
    level = effort_level(body, thinking)
    if level is None:
        return None
    out: Json = {"effort": level}
    if thinking.get("display") != "omitted":
        out["summary"] = "detailed"
    return out


def translate_request(body: Mapping[str, Any], model: Model, names: ToolNames | None = None) -> Json:
    """`names`: the request's tool names for Responses (`ToolNames.for_request(body, RESPONSES)` when not given); the
    adapter builds it once and hands the same to the reply side, which maps the names back."""
    names = names or ToolNames.for_request(body, RESPONSES)
    instructions = _system_texts(body.get("system"))
    items: list[Json] = []
    for message in body.get("messages") or ():
        role = message.get("role")
        if role == "system":
            instructions.extend(_system_texts(message.get("content")))
        elif role == "assistant":
            items.extend(_assistant_items(message.get("content"), names))
        else:
            items.extend(_user_items(message.get("content")))
    out: Json = {"model": model.model}
    if instructions:
        out["instructions"] = "\n\n".join(instructions)
    out["input"] = _pair_calls(items)
    tools = [_function(t, names) for t in body.get("tools") or () if t.get("type") in (None, "custom")]
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            mapped = _tool_choice(choice, names)
            if mapped is not None:
                out["tool_choice"] = mapped
            if choice.get("disable_parallel_tool_use") is True:
                out["parallel_tool_calls"] = False
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int):
        clamped = min(max_tokens, model.max_output) if model.max_output else max_tokens
        out["max_output_tokens"] = max(clamped, _MIN_OUTPUT_TOKENS)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        unsupported("openai-responses", "stop_sequences", "the Responses API has no stop parameter")
    if body.get("top_k") is not None:
        unsupported("openai-responses", "top_k", "the Responses API has no top_k parameter")
    effort = reasoning(body, model.model)
    if effort:
        out["reasoning"] = effort
    if is_reasoning_model(model.model):
        out["include"] = [ENCRYPTED_REASONING]  # its reasoning comes back, to be sent again next turn
    out["store"] = False
    identity = client_identity(body)
    if identity.session:
        out["prompt_cache_key"] = identity.session  # one session's prompts in one cache bucket
    if identity.user:
        out["safety_identifier"] = identity.user
    if body.get("stream"):
        out["stream"] = True
    return apply_overrides(out, model.force, model.drop)


def _system_texts(system: Any) -> list[str]:
    if isinstance(system, str):
        return [system] if system else []
    return [
        b["text"]
        for b in system or ()
        if isinstance(b, dict) and b.get("text") and not b["text"].startswith(BILLING_HEADER)
    ]


def _assistant_items(content: Any, names: ToolNames) -> list[Json]:
    if isinstance(content, str):
        return [_message("assistant", content)] if content else []
    items: list[Json] = []
    texts: list[str] = []

    def flush_text() -> None:
        if texts:
            items.append(_message("assistant", "\n\n".join(texts)))
            texts.clear()

    for block in content or ():
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            texts.append(block["text"])
        elif kind == "thinking":
            carried = reasoning_item(block)
            if carried is not None:
                flush_text()
                items.append(carried)
        elif kind == "tool_use":
            flush_text()
            arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {}).decode()
            call_id = upstream_tool_id(block.get("id"))
            items.append({"type": "function_call", "call_id": call_id,
                          "name": names.upstream(str(block.get("name", ""))), "arguments": arguments})
    flush_text()
    # A reasoning item must be followed by the call or message it came with: the API refuses one that is not.
    return [item for i, item in enumerate(items)
            if item["type"] != "reasoning" or (i + 1 < len(items) and items[i + 1]["type"] != "reasoning")]


def _user_items(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [_message("user", [{"type": "input_text", "text": content}])] if content else []
    outputs: list[Json] = []
    parts: list[Json] = []
    for block in content or ():
        if block.get("type") == "tool_result":
            outputs.append(_function_output(block))
        else:
            parts.extend(_input_parts(block))
    return outputs + ([_message("user", parts)] if parts else [])


def _function_output(block: Mapping[str, Any]) -> Json:
    content = block.get("content")
    prefix = "Error: " if block.get("is_error") else ""
    if isinstance(content, str) or content is None:
        output: Any = prefix + (content or "")
    else:
        parts = [p for item in content for p in _input_parts(item)]
        if any(p["type"] != "input_text" for p in parts):
            output = ([{"type": "input_text", "text": prefix.strip()}] if prefix else []) + parts
        else:
            output = prefix + "\n".join(p["text"] for p in parts)
    return {"type": "function_call_output", "call_id": upstream_tool_id(block.get("tool_use_id")), "output": output}


def _input_parts(block: Mapping[str, Any]) -> list[Json]:
    kind = block.get("type")
    source: Mapping[str, Any] = block["source"] if isinstance(block.get("source"), dict) else {}
    if kind == "text":
        return [{"type": "input_text", "text": block["text"]}] if block.get("text") else []
    if kind == "image":
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
        else:
            url = source.get("url", "")
        return [{"type": "input_image", "image_url": url, "detail": "auto"}] if url else []
    if kind == "document":
        title = block.get("title") if isinstance(block.get("title"), str) and block.get("title") else None
        if source.get("type") == "base64":
            data = f"data:{source.get('media_type', 'application/pdf')};base64,{source.get('data', '')}"
            return [{"type": "input_file", "filename": title or "document.pdf", "file_data": data}]
        if source.get("type") == "url":
            part: Json = {"type": "input_file", "file_url": source.get("url", "")}
            if title:
                part["filename"] = title
            return [part]
        texts: list[str] = []
        if source.get("type") == "text" and source.get("data"):
            texts = [source["data"]]
        elif source.get("type") == "content":
            inner = source.get("content")
            if isinstance(inner, str):
                texts = [inner] if inner else []
            else:
                parts = [p for item in inner or () for p in _input_parts(item)]
                if any(p["type"] != "input_text" for p in parts):
                    return ([{"type": "input_text", "text": title}] if title else []) + parts
                texts = [p["text"] for p in parts]
        text = "\n\n".join(([title] if title else []) + [t for t in texts if t])
        return [{"type": "input_text", "text": text}] if texts and text else []
    if kind == "search_result":
        text = search_result_text(block)
        return [{"type": "input_text", "text": text}] if text else []
    if kind == "tool_reference":
        text = tool_reference_text(block)
        return [{"type": "input_text", "text": text}] if text else []
    return []


def _message(role: str, content: str | list[Json]) -> Json:
    return {"type": "message", "role": role, "content": content}


def _pair_calls(items: list[Json]) -> list[Json]:
    """Each `function_call_output` right after the run of calls it answers; unanswered calls get a placeholder;
    outputs whose call is not in the history become user text (the API rejects both kinds of orphan)."""
    outputs = {i["call_id"]: i for i in items if i.get("type") == "function_call_output"}
    calls = {i["call_id"] for i in items if i.get("type") == "function_call"}
    paired: list[Json] = []
    pending: list[Json] = []
    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            paired.append(item)
            pending.append(outputs.get(item["call_id"]) or _placeholder(item["call_id"]))
            continue
        paired.extend(pending)
        pending = []
        if kind != "function_call_output":
            paired.append(item)
        elif item["call_id"] not in calls:
            text = item["output"] if isinstance(item["output"], str) else "\n".join(
                p.get("text", "") for p in item["output"] if p.get("type") == "input_text"
            )
            paired.append(_message("user", [{"type": "input_text", "text": f"Tool result: {text}"}]))
    paired.extend(pending)
    return paired


def _placeholder(call_id: str) -> Json:
    return {"type": "function_call_output", "call_id": call_id, "output": UNANSWERED}


def _function(tool: Mapping[str, Any], names: ToolNames) -> Json:
    return {
        "type": "function",
        "name": names.upstream(str(tool.get("name", ""))),
        "description": tool.get("description") or "",
        "parameters": tool_parameters(tool.get("input_schema")),
        "strict": False,
    }


def _tool_choice(choice: Mapping[str, Any], names: ToolNames) -> Any:
    kind = choice.get("type")
    if kind == "tool" and choice.get("name"):
        return {"type": "function", "name": names.upstream(str(choice["name"]))}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))


