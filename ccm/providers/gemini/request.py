"""Anthropic Messages request → Gemini `generateContent` request (PROTOCOL §7). Pure: no I/O, the input untouched.

Decisions, so they are stated once:
- System text (the `system` field and `system`-role messages inside `messages`, in order) → `systemInstruction`.
  Claude Code's `x-anthropic-billing-header` block is Anthropic bookkeeping that changes between request kinds; it
  is left out so Gemini's implicit prefix cache sees a stable system prompt.
- Roles user/assistant → user/model; consecutive same-role turns merge; empty text is never sent.
- Images: base64 → `inlineData`; URL images → `fileData {fileUri: url, mimeType guessed from the path}`. ccm never
  downloads from arbitrary hosts at run time; Gemini fetches public URLs itself on models that support it and
  rejects them otherwise, which reaches the client as a clear 400. PDFs likewise; text documents → text.
- Tool names outside Gemini's `^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$` (long MCP names) are rewritten by `tool_names`
  (rule `GEMINI`), the same way in declarations, calls, responses and `allowedFunctionNames`; the reply maps them back.
- tool_result → `functionResponse {id, name, response: {result}}` (`{error}` when `is_error`), names looked up from
  the matching tool_use, in the order of the calls; images inside results follow as `inlineData` parts. Call ids
  go back as Gemini gave them (`tool_ids.upstream_tool_id` decodes the ones the reply side had to encode).
- Thought signatures: the reply side (gemini.py) hands Gemini's `thoughtSignature` to Claude Code as a thinking block
  whose signature is `SIGNATURE_PREFIX + signature`, placed just before the call it belongs to. Here such a block
  puts the signature back on the first `functionCall` after it; every other thinking block is dropped. The prefix
  marks the block as Gemini's, so other adapters can recognise and drop it. For Gemini 3 and later, a model turn
  whose first call has no signature (history another model wrote) gets Google's documented placeholder.
- Thinking, effort first as on every adapter (`output_config.effort` is what current Claude Code sends; the budget
  counts only without one): Gemini 2.x gets `thinkingBudget` (effort low 1024, medium dynamic, high+ the model's
  cap; else `budget_tokens` clamped to the cap; `disabled` → 0 on Flash), Gemini 3+ gets `thinkingLevel` (`low` for
  effort low, `high` for effort high+, the model's own default for medium; without an effort, `low` under 4096 budget
  tokens and `high` from 16384 — `medium` and `minimal` are not accepted by every Gemini 3 model). The generation is
  read from the model id (`gemini-2.5-flash` → 2); ids without one are treated as current (3+). Thought summaries are
  asked for (`includeThoughts`) when thinking is on and the client did not ask for `display: "omitted"`.
- Server tools are dropped, except `web_search_*` on a model with quirk `google_search` → `{googleSearch: {}}`.
  `tool_choice` → `toolConfig.functionCallingConfig` only when there are function declarations: Gemini answers 400
  "Function calling config is set without function_declarations" to one beside Google Search alone.
- `max_tokens` is clamped to the model's `max_output`; `force`/`drop` apply last, to the Gemini body.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Any

import orjson

from ccm.errors import ApiError
from ccm.providers.gemini.schema import clean_parameters
from ccm.providers.request import BILLING_HEADER, apply_overrides, search_result_text, tool_reference_text
from ccm.providers.tool_ids import upstream_tool_id
from ccm.providers.tool_names import GEMINI, ToolNames, upstream_name
from ccm.table import Model

SIGNATURE_PREFIX = "ccm.gemini."
SKIP_SIGNATURE = "skip_thought_signature_validator"

_GENERATION = re.compile(r"gemini-(\d+)")
_BUDGET_FOR_EFFORT_2X = {"low": 1024, "medium": -1}
_EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
_STOP_SEQUENCES_MAX = 5  # Gemini rejects more


def generation(model_id: str) -> int:
    """The Gemini generation of a model id (`gemini-3-pro-preview` → 3); ids without one count as current."""
    found = _GENERATION.search(model_id)
    return int(found.group(1)) if found else 99


def translate_request(body: Mapping[str, Any], model: Model, names: ToolNames | None = None) -> dict[str, Any]:
    """`names`: the request's tool names for Gemini (`ToolNames.for_request(body, GEMINI)` when not given); the
    adapter builds it once and hands the same to the reply side, which maps the names back."""
    names = names or ToolNames.for_request(body, GEMINI)
    calls = _calls(body.get("messages") or ())
    system = _system_parts(body.get("system"))
    contents: list[dict[str, Any]] = []
    for message in body.get("messages") or ():
        role = message.get("role")
        if role == "system":
            system.extend(_system_parts(message.get("content")))
            continue
        if role == "assistant":
            parts = _model_parts(message.get("content"), names)
        else:
            parts = _user_parts(message.get("content"), calls, names)
        if not parts:
            continue
        gemini_role = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if generation(model.model) >= 3:
        _fill_missing_signatures(contents)

    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _tools(body.get("tools") or (), model)
    if tools:
        out["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"), names)
        # a calling mode needs functions to apply to: Gemini rejects one beside Google Search alone
        if tool_config and any("functionDeclarations" in t for t in tools):
            out["toolConfig"] = tool_config
    out["generationConfig"] = _generation_config(body, model)
    return apply_overrides(out, model.force, model.drop)


# --- contents ------------------------------------------------------------------------------------------------------


def _system_parts(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"text": system}] if system else []
    parts = []
    for block in system or ():
        text = block.get("text") if isinstance(block, dict) else None
        if text and not text.startswith(BILLING_HEADER):
            parts.append({"text": text})
    return parts


def _calls(messages: Any) -> dict[str, tuple[str, int]]:
    """tool_use id → (the client's name, position among all calls), for functionResponse names and their order."""
    calls: dict[str, tuple[str, int]] = {}
    for message in messages:
        content = message.get("content") if message.get("role") == "assistant" else None
        if isinstance(content, list):
            for block in content:
                if block.get("type") == "tool_use":
                    calls[block.get("id", "")] = (block.get("name", ""), len(calls))
    return calls


def _model_parts(content: Any, names: ToolNames) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    signature: str | None = None
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            if block.get("text"):
                parts.append({"text": block["text"]})
        elif kind == "thinking":
            carried = block.get("signature") or ""
            if carried.startswith(SIGNATURE_PREFIX):
                signature = carried[len(SIGNATURE_PREFIX) :]
        elif kind == "tool_use":
            call = {"id": upstream_tool_id(block.get("id")), "name": names.upstream(str(block.get("name", ""))),
                    "args": _args(block)}
            part: dict[str, Any] = {"functionCall": call}
            if signature:
                part["thoughtSignature"] = signature
                signature = None
            parts.append(part)
        elif kind in ("image", "document"):
            parts.extend(_media_parts(block))
    return parts


def _args(block: Mapping[str, Any]) -> dict[str, Any]:
    value = block.get("input")
    return value if isinstance(value, dict) else {}


def _user_parts(content: Any, calls: Mapping[str, tuple[str, int]], names: ToolNames) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    responses: list[tuple[int, dict[str, Any]]] = []
    result_media: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for block in content or ():
        kind = block.get("type")
        if kind == "tool_result":
            order, part, media = _function_response(block, calls, names)
            responses.append((order, part))
            result_media.extend(media)
        elif kind == "text":
            if block.get("text"):
                rest.append({"text": block["text"]})
        elif kind == "search_result":
            text = search_result_text(block)
            if text:
                rest.append({"text": text})
        else:
            rest.extend(_media_parts(block))
    responses.sort(key=lambda item: item[0])
    return [part for _, part in responses] + result_media + rest


def _function_response(
    block: Mapping[str, Any], calls: Mapping[str, tuple[str, int]], names: ToolNames
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    call_id = block.get("tool_use_id", "")
    if call_id not in calls:
        raise ApiError(400, f"tool_result block references tool_use id {call_id!r}, "
                            "which no earlier assistant turn holds")
    client_name, order = calls[call_id]
    name = names.upstream(str(client_name))
    texts: list[str] = []
    media: list[dict[str, Any]] = []
    content = block.get("content")
    if isinstance(content, str):
        texts.append(content)
    for item in content if isinstance(content, list) else ():
        kind = item.get("type")
        if kind == "text":
            texts.append(item.get("text", ""))
        elif kind == "search_result":
            texts.append(search_result_text(item))
        elif kind == "tool_reference":
            texts.append(tool_reference_text(item))
        else:
            media.extend(_media_parts(item))
    text = "\n".join(t for t in texts if t)
    if not text and media:
        text = "(the result is the attachment that follows)"
    response = {"error": text or "error"} if block.get("is_error") else {"result": text}
    return order, {"functionResponse": {"id": upstream_tool_id(call_id), "name": name, "response": response}}, media


def _media_parts(block: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Image and document blocks; anything else (server tool history, redacted thinking…) has no Gemini form."""
    kind = block.get("type")
    source: Mapping[str, Any] = block["source"] if isinstance(block.get("source"), dict) else {}
    source_type = source.get("type")
    if kind == "image":
        if source_type == "base64":
            return [{"inlineData": {"mimeType": source.get("media_type", "image/png"), "data": source.get("data", "")}}]
        if source_type == "url":
            return [{"fileData": {"mimeType": _guess_type(source.get("url", ""), "image/png"),
                                  "fileUri": source.get("url", "")}}]
    elif kind == "document":
        if source_type == "base64":
            return [{"inlineData": {"mimeType": source.get("media_type", "application/pdf"),
                                    "data": source.get("data", "")}}]
        if source_type == "url":
            return [{"fileData": {"mimeType": _guess_type(source.get("url", ""), "application/pdf"),
                                  "fileUri": source.get("url", "")}}]
        if source_type == "text" and source.get("data"):
            title = block.get("title")
            return [{"text": f"{title}\n\n{source['data']}" if title else source["data"]}]
        if source_type == "content":
            inner = source.get("content")
            if isinstance(inner, str):
                return [{"text": inner}] if inner else []
            return [{"text": c["text"]} for c in inner or () if c.get("type") == "text" and c.get("text")]
    return []


def _guess_type(url: str, fallback: str) -> str:
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed or fallback


def _fill_missing_signatures(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        if content["role"] != "model":
            continue
        first_call = next((p for p in content["parts"] if "functionCall" in p), None)
        if first_call is not None and "thoughtSignature" not in first_call:
            first_call["thoughtSignature"] = SKIP_SIGNATURE


# --- tools ---------------------------------------------------------------------------------------------------------

_translated_tools: dict[tuple[bytes, bool], list[dict[str, Any]]] = {}
_TOOLS_CACHE_MAX = 256


def _tools(tools: Any, model: Model) -> list[dict[str, Any]]:
    """The Gemini `tools`, cached by the tool list's JSON: Claude Code repeats the same tools every turn, and
    serialising them is far cheaper than cleaning every schema again. Cached values are shared: the translated body
    is serialised right away and `apply_overrides` copies before writing, so nothing modifies them."""
    if not tools:
        return []
    search = "google_search" in model.quirks
    key = (orjson.dumps(tools), search)
    found = _translated_tools.get(key)
    if found is None:
        found = _build_tools(tools, search)
        if len(_translated_tools) >= _TOOLS_CACHE_MAX:
            _translated_tools.clear()
        _translated_tools[key] = found
    return found


def _build_tools(tools: Any, search_quirk: bool) -> list[dict[str, Any]]:
    declarations = []
    search = False
    for tool in tools:
        kind = tool.get("type")
        if kind in (None, "custom"):
            declaration: dict[str, Any] = {"name": upstream_name(str(tool.get("name", "")), GEMINI)}
            if tool.get("description"):
                declaration["description"] = tool["description"]
            parameters = clean_parameters(tool.get("input_schema"))
            if parameters is not None:
                declaration["parameters"] = parameters
            declarations.append(declaration)
        elif kind.startswith("web_search") and search_quirk:
            search = True
    out: list[dict[str, Any]] = []
    if declarations:
        out.append({"functionDeclarations": declarations})
    if search:
        out.append({"googleSearch": {}})
    return out


def _tool_config(choice: Any, names: ToolNames) -> dict[str, Any] | None:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if kind == "any":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if kind == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if kind == "tool" and choice.get("name"):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [names.upstream(choice["name"])]}}
    return None


# --- generation config ---------------------------------------------------------------------------------------------


def _generation_config(body: Mapping[str, Any], model: Model) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int):
        config["maxOutputTokens"] = min(max_tokens, model.max_output) if model.max_output else max_tokens
    elif model.max_output:
        config["maxOutputTokens"] = model.max_output
    for source, target in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK")):
        if body.get(source) is not None:
            config[target] = body[source]
    stops = [s for s in body.get("stop_sequences") or () if isinstance(s, str) and s]
    if stops:
        config["stopSequences"] = stops[:_STOP_SEQUENCES_MAX]
    thinking = _thinking_config(body, model.model)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _thinking_config(body: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    thinking: Mapping[str, Any] = body["thinking"] if isinstance(body.get("thinking"), dict) else {}
    kind = thinking.get("type")
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    output_config = body.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    config: dict[str, Any] = {}
    if generation(model_id) >= 3:
        level = _level(effort, budget)
        if level:
            config["thinkingLevel"] = level
    else:
        cap = 24576 if "flash" in model_id else 32768
        if kind == "disabled":
            if "flash" in model_id:
                config["thinkingBudget"] = 0
        elif effort in _EFFORTS:  # effort first, as on every adapter; the budget only without one
            config["thinkingBudget"] = _BUDGET_FOR_EFFORT_2X.get(effort, cap)
        elif isinstance(budget, int):
            config["thinkingBudget"] = min(budget, cap)
    if kind in ("enabled", "adaptive") and thinking.get("display") != "omitted":
        config["includeThoughts"] = True
    return config


def _level(effort: Any, budget: Any) -> str | None:
    """Gemini 3's level: from the effort when the client names one (medium: the model's default), else the budget."""
    if effort in _EFFORTS:
        return "low" if effort == "low" else None if effort == "medium" else "high"
    if isinstance(budget, int):
        return "low" if budget < 4096 else "high" if budget >= 16384 else None
    return None
