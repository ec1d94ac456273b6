"""Parse a Messages API request body and validate its structure the way Anthropic's API does.

    parse_request(raw, count_only=False) -> dict      the parsed body, unchanged
                                         raises ApiError(400, "<path>: <problem>")
    check_request(body, count_only=False) -> None     the same checks on a body already parsed

Called once per request by the server, before routing: `raw` is parsed with orjson exactly once and the dict it
returns is what every later stage reads. Messages name the offending field by its dotted path, in the words of
Anthropic's (pydantic) validator: `messages.1.content.0.type: unknown content block type "foo"`,
`max_tokens: Field required`, `messages: Input should be a valid list`.

What is checked is structure only (types, required fields, known roles, block and tool shapes); semantic rules
that need the model (context size, thinking signatures, tool_use/tool_result pairing) are left to the upstream.
Everything current Claude Code sends is accepted: `system`-role messages inside `messages`, unknown top-level and
per-object fields (Anthropic upstreams receive them untouched), server tools, and any server block type ending in
`_tool_use` or `_tool_result`, so a new Anthropic server tool needs no release of ccm.

Guarantees to the stages after it: no value the validator does not walk itself (tool inputs and schemas, metadata,
unknown fields…) is nested deeper than `MAX_VALUE_DEPTH`, so the whole body stays within `MAX_DEPTH` levels and can
always be serialised again with orjson, whose encoder refuses 255 levels although its decoder accepts 1024. The
validator itself never recurses on user data: block nesting is bounded (tool_result and document content hold only
leaf blocks). Body size limits are the server's job, checked before this is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ccm.errors import ApiError

# The deepest a free-form value may nest. The containers the validator walks (messages, blocks, nested blocks,
# sources, tools) are at most `_WALKED_DEPTH` levels deep, so a body is at most MAX_DEPTH levels deep: well under
# orjson's encoder limit of 254, with room for adapters that wrap schemas and inputs a few levels deeper.
MAX_VALUE_DEPTH = 200
_WALKED_DEPTH = 10
MAX_DEPTH = _WALKED_DEPTH + MAX_VALUE_DEPTH
# orjson.dumps of the free values, listed and wrapped in this many lists, fails exactly when one of them is deeper
# than MAX_VALUE_DEPTH (the encoder accepts 254 levels; the list adds one).
_DEPTH_PROBE_WRAPS = 254 - 1 - MAX_VALUE_DEPTH

ROLES = ("user", "assistant", "system")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
THINKING_TYPES = ("enabled", "disabled", "adaptive")
MIN_THINKING_BUDGET = 1024


def parse_request(raw: bytes, *, count_only: bool = False) -> dict[str, Any]:
    """Parse and validate a `/v1/messages` body (`count_only=True`: a `/v1/messages/count_tokens` body, where
    `max_tokens` and `stream` are not required)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _json_error(exc) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, not {_json_kind(body)}")
    check_request(body, count_only=count_only)
    return body


def check_request(body: dict[str, Any], *, count_only: bool = False) -> None:
    """Validate an already parsed body (what parse_request does after parsing): for requests that arrive as
    objects, such as those `ccm explain` reads from files."""
    free: list[Any] = []
    _check_body(body, count_only, free)
    _check_depth(free)


def _json_error(exc: orjson.JSONDecodeError) -> ApiError:
    reason = str(exc)
    if "UTF-8" in reason or "surrogate" in reason:
        return ApiError(400, f"The request body is not valid UTF-8: {reason}")
    if "depth limit" in reason:
        return _too_deep()
    return ApiError(400, f"The request body is not valid JSON: {reason}")


def _check_depth(free: list[Any]) -> None:
    """Check the nesting of the free-form values the structural walk collected (`free`: the dicts and lists it did
    not walk itself). orjson's encoder walks them in C and refuses 255 levels; wrapping moves that limit down to
    MAX_VALUE_DEPTH. Only free values are probed: a probe of the whole body costs ~3x more, mostly in encoding the
    large non-ASCII strings of the system prompt and tool descriptions, which add no depth."""
    probe: Any = free
    for _ in range(_DEPTH_PROBE_WRAPS):
        probe = [probe]
    try:
        orjson.dumps(probe)
    except orjson.JSONEncodeError:
        # Decoded JSON holds only encodable types (orjson turns integers beyond 64 bits into floats): the one
        # possible failure is the recursion limit.
        raise _too_deep() from None


def _collect_free(container: dict[str, Any], free: list[Any], walked: frozenset[str] = frozenset()) -> None:
    """Add the dict and list values of `container` that the validator does not walk to `free`, for the depth probe."""
    for key, value in container.items():
        if (value.__class__ is dict or value.__class__ is list) and key not in walked:
            free.append(value)


# --- top level ---------------------------------------------------------------------------------------------------

Check = Callable[[Any, str], None]
BlockCheck = Callable[[dict[str, Any], str, list[Any]], None]

# Top-level keys whose containers the validator walks (collecting free values inside); everything else is free.
_WALKED_BODY_KEYS = frozenset(("messages", "system", "tools"))
_WALKED_CONTENT = frozenset(("content",))
_WALKED_SOURCE = frozenset(("source",))
_WALKED_NOTHING: frozenset[str] = frozenset()


def _check_body(body: dict[str, Any], count_only: bool, free: list[Any]) -> None:
    model = body.get("model")
    if model is None:
        raise _required("model")
    if not isinstance(model, str):
        raise _invalid("model", "Input should be a valid string")
    if not model:
        raise _invalid("model", "String should have at least 1 character")

    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        if not count_only:
            raise _required("max_tokens")
    else:
        _check_int(max_tokens, "max_tokens", 1)

    messages = body.get("messages")
    if messages is None:
        raise _required("messages")
    if not isinstance(messages, list):
        raise _invalid("messages", "Input should be a valid list")
    if not messages:
        raise _invalid("messages", "at least one message is required")
    for index, message in enumerate(messages):
        _check_message(message, index, free)

    system = body.get("system")
    if system is not None:
        _check_system(system, free)
    tools = body.get("tools")
    if tools is not None:
        _check_tools(tools, free)
    for field, check in _OPTIONAL_FIELDS.items():
        value = body.get(field)
        if value is not None:
            check(value, field)
    _collect_free(body, free, _WALKED_BODY_KEYS)

    thinking = body.get("thinking")
    if (isinstance(thinking, dict) and thinking["type"] == "enabled" and max_tokens is not None
            and thinking["budget_tokens"] >= max_tokens):
        raise _invalid("max_tokens", "must be greater than thinking.budget_tokens")


def _check_system(value: Any, free: list[Any]) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _invalid("system", "Input should be a valid string or a list of text blocks")
    for index, block in enumerate(value):
        where = f"system.{index}"
        if not isinstance(block, dict):
            raise _invalid(where, "Input should be a valid dictionary")
        if block.get("type") != "text":
            raise _invalid(f"{where}.type", "Input should be 'text'")
        _check_text(block, where, free)
        _collect_free(block, free)


def _check_tools(value: Any, free: list[Any]) -> None:
    if not isinstance(value, list):
        raise _invalid("tools", "Input should be a valid list")
    for index, tool in enumerate(value):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _invalid(where, "Input should be a valid dictionary")
        _require_str(tool, "name", where)
        kind = tool.get("type")
        if kind is None or kind == "custom":
            schema = tool.get("input_schema")
            if schema is None:
                raise _required(f"{where}.input_schema")
            _check_object(schema, f"{where}.input_schema")
            if schema.get("type") != "object":
                raise _invalid(f"{where}.input_schema.type", "Input should be 'object'")
            description = tool.get("description")
            if description is not None and not isinstance(description, str):
                raise _invalid(f"{where}.description", "Input should be a valid string")
        elif not isinstance(kind, str):
            raise _invalid(f"{where}.type", "Input should be a valid string")
        _collect_free(tool, free)


def _check_stream(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _invalid(path, "Input should be a valid boolean")


def _check_number(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(path, "Input should be a valid number")


def _check_top_k(value: Any, path: str) -> None:
    _check_int(value, path, 0)


def _check_stop_sequences(value: Any, path: str) -> None:
    if not isinstance(value, list):
        raise _invalid(path, "Input should be a valid list")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _invalid(f"{path}.{index}", "Input should be a valid string")


def _check_metadata(value: Any, path: str) -> None:
    _check_object(value, path)
    user_id = value.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise _invalid(f"{path}.user_id", "Input should be a valid string")


def _check_thinking(value: Any, path: str) -> None:
    _check_object(value, path)
    kind = _require_str(value, "type", path)
    if kind not in THINKING_TYPES:
        raise _invalid(f"{path}.type", "Input should be 'enabled', 'disabled' or 'adaptive'")
    if kind == "enabled":
        budget = value.get("budget_tokens")
        if budget is None:
            raise _required(f"{path}.budget_tokens")
        _check_int(budget, f"{path}.budget_tokens", MIN_THINKING_BUDGET)


def _check_tool_choice(value: Any, path: str) -> None:
    _check_object(value, path)
    kind = _require_str(value, "type", path)
    if kind not in TOOL_CHOICE_TYPES:
        raise _invalid(f"{path}.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "tool":
        _require_str(value, "name", path)
    parallel = value.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _invalid(f"{path}.disable_parallel_tool_use", "Input should be a valid boolean")


def _check_object(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _invalid(path, "Input should be a valid dictionary")


def _check_int(value: Any, path: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(path, "Input should be a valid integer")
    if value < minimum:
        raise _invalid(path, f"Input should be greater than or equal to {minimum}")


# Optional top-level fields with a known shape, checked but not walked (their containers count as free values).
# Anything else (output_config's fields, context_management's edits, safeguards, service_tier, container, fields
# added after this was written) passes through unchecked.
_OPTIONAL_FIELDS: dict[str, Check] = {
    "stream": _check_stream,
    "temperature": _check_number,
    "top_p": _check_number,
    "top_k": _check_top_k,
    "stop_sequences": _check_stop_sequences,
    "tool_choice": _check_tool_choice,
    "thinking": _check_thinking,
    "metadata": _check_metadata,
    "output_config": _check_object,
    "context_management": _check_object,
}


# --- messages and content blocks ---------------------------------------------------------------------------------


def _check_message(message: Any, index: int, free: list[Any]) -> None:
    if not isinstance(message, dict):
        raise _invalid(f"messages.{index}", "Input should be a valid dictionary")
    role = message.get("role")
    if role is None:
        raise _required(f"messages.{index}.role")
    if role not in ROLES:
        raise _invalid(f"messages.{index}.role", "Input should be 'user', 'assistant' or 'system'")
    content = message.get("content")
    if isinstance(content, list):
        path = f"messages.{index}.content"
        for position, block in enumerate(content):
            _check_block(block, path, position, _MESSAGE_BLOCKS, free)
    elif content is None:
        raise _required(f"messages.{index}.content")
    elif not isinstance(content, str):
        raise _invalid(f"messages.{index}.content", "Input should be a valid string or a list of content blocks")
    _collect_free(message, free, _WALKED_CONTENT)


def _check_block(block: Any, path: str, position: int, allowed: Mapping[str, BlockCheck], free: list[Any]) -> None:
    if not isinstance(block, dict):
        raise _invalid(f"{path}.{position}", "Input should be a valid dictionary")
    kind = block.get("type")
    if not isinstance(kind, str):
        if kind is None:
            raise _required(f"{path}.{position}.type")
        raise _invalid(f"{path}.{position}.type", "Input should be a valid string")
    check = allowed.get(kind)
    if check is not None:
        check(block, f"{path}.{position}", free)
        _collect_free(block, free, _WALKED_BLOCK_KEYS.get(kind, _WALKED_NOTHING))
    elif allowed is _MESSAGE_BLOCKS and kind.endswith(("_tool_use", "_tool_result")):
        _collect_free(block, free)  # a server tool block ccm does not know yet: Anthropic upstreams judge it
    elif kind in _MESSAGE_BLOCKS:
        raise _invalid(f"{path}.{position}.type", f'content block type "{kind}" is not allowed here')
    else:
        raise _invalid(f"{path}.{position}.type", f'unknown content block type "{kind}"')


def _check_text(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "text", path)


def _check_image(block: dict[str, Any], path: str, free: list[Any]) -> None:
    source = _require_source(block, path, free)
    kind = source.get("type")
    if kind == "base64":
        _require_str(source, "media_type", f"{path}.source")
        _require_str(source, "data", f"{path}.source")
    elif kind == "url":
        _require_str(source, "url", f"{path}.source")
    elif kind == "file":
        _require_str(source, "file_id", f"{path}.source")
    else:
        raise _source_type_error(kind, f"{path}.source", "'base64', 'url' or 'file'")


def _check_document(block: dict[str, Any], path: str, free: list[Any]) -> None:
    source = _require_source(block, path, free)
    kind = source.get("type")
    where = f"{path}.source"
    if kind in ("base64", "text"):
        _require_str(source, "data", where)
    elif kind == "url":
        _require_str(source, "url", where)
    elif kind == "file":
        _require_str(source, "file_id", where)
    elif kind == "content":
        content = source.get("content")
        if isinstance(content, list):
            for position, inner in enumerate(content):
                _check_block(inner, f"{where}.content", position, _DOCUMENT_CONTENT_BLOCKS, free)
        elif not isinstance(content, str):
            raise _invalid(f"{where}.content", "Input should be a valid string or a list of content blocks")
    else:
        raise _source_type_error(kind, where, "'base64', 'text', 'content', 'url' or 'file'")


def _check_tool_use(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "id", path)
    _require_str(block, "name", path)
    tool_input = block.get("input")
    if tool_input is None:
        raise _required(f"{path}.input")
    _check_object(tool_input, f"{path}.input")


def _check_mcp_tool_use(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _check_tool_use(block, path, free)
    _require_str(block, "server_name", path)


def _check_tool_result(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "tool_use_id", path)
    content = block.get("content")
    if isinstance(content, list):
        for position, inner in enumerate(content):
            _check_block(inner, f"{path}.content", position, _TOOL_RESULT_BLOCKS, free)
    elif content is not None and not isinstance(content, str):
        raise _invalid(f"{path}.content", "Input should be a valid string or a list of content blocks")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _invalid(f"{path}.is_error", "Input should be a valid boolean")


def _check_tool_use_id(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "tool_use_id", path)


def _check_thinking_block(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "thinking", path)
    signature = block.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise _invalid(f"{path}.signature", "Input should be a valid string")


def _check_redacted_thinking(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "data", path)


def _check_server_tool_result(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "tool_use_id", path)
    if block.get("content") is None:
        raise _required(f"{path}.content")


def _check_search_result(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "source", path)
    _require_str(block, "title", path)
    content = block.get("content")
    if not isinstance(content, list):
        raise _invalid(f"{path}.content", "Input should be a valid list")
    for position, inner in enumerate(content):
        _check_block(inner, f"{path}.content", position, _SEARCH_RESULT_BLOCKS, free)


def _check_container_upload(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "file_id", path)


def _check_tool_reference(block: dict[str, Any], path: str, free: list[Any]) -> None:
    _require_str(block, "tool_name", path)


# Which block types may appear where. Nested content holds only leaf blocks (text, image, document with text or
# leaf content, search_result with text), so validation depth is bounded whatever the body's nesting.
_MESSAGE_BLOCKS: dict[str, BlockCheck] = {
    "text": _check_text,
    "image": _check_image,
    "document": _check_document,
    "tool_use": _check_tool_use,
    "tool_result": _check_tool_result,
    "thinking": _check_thinking_block,
    "redacted_thinking": _check_redacted_thinking,
    "server_tool_use": _check_tool_use,
    "web_search_tool_result": _check_server_tool_result,
    "search_result": _check_search_result,
    "container_upload": _check_container_upload,
    "mcp_tool_use": _check_mcp_tool_use,
    "mcp_tool_result": _check_tool_use_id,
    "tool_reference": _check_tool_reference,
}
_TOOL_RESULT_BLOCKS = {
    kind: _MESSAGE_BLOCKS[kind] for kind in ("text", "image", "document", "search_result", "tool_reference")
}
_DOCUMENT_CONTENT_BLOCKS = {kind: _MESSAGE_BLOCKS[kind] for kind in ("text", "image")}
_SEARCH_RESULT_BLOCKS = {"text": _check_text}
# The block fields the checkers above walk themselves (every other dict or list in a block is a free value).
_WALKED_BLOCK_KEYS = {
    "image": _WALKED_SOURCE,
    "document": _WALKED_SOURCE,
    "tool_result": _WALKED_CONTENT,
    "search_result": _WALKED_CONTENT,
}


# --- helpers -----------------------------------------------------------------------------------------------------


def _require_source(block: dict[str, Any], path: str, free: list[Any]) -> dict[str, Any]:
    source = block.get("source")
    if source is None:
        raise _required(f"{path}.source")
    _check_object(source, f"{path}.source")
    # Walked rather than free: its `data` may be megabytes of base64 the depth probe would copy for nothing.
    _collect_free(source, free, _WALKED_CONTENT if source.get("type") == "content" else _WALKED_NOTHING)
    return source  # type: ignore[no-any-return]


def _source_type_error(kind: Any, path: str, expected: str) -> ApiError:
    if kind is None:
        return _required(f"{path}.type")
    return _invalid(f"{path}.type", f"Input should be {expected}")


def _require_str(container: dict[str, Any], field: str, path: str) -> str:
    value = container.get(field)
    if isinstance(value, str):
        return value
    if value is None:
        raise _required(f"{path}.{field}")
    raise _invalid(f"{path}.{field}", "Input should be a valid string")


def _too_deep() -> ApiError:
    return ApiError(400, f"The request body is nested too deeply: a value may nest at most {MAX_VALUE_DEPTH} levels")


def _required(path: str) -> ApiError:
    return ApiError(400, f"{path}: Field required")


def _invalid(path: str, problem: str) -> ApiError:
    return ApiError(400, f"{path}: {problem}")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
