"""What Anthropic's Messages API rejects, as a function: `check_messages_request(body, count_only)` raises
`Rejected` (400 `invalid_request_error`) on the first problem, worded like the real API.

Checked: model, max_tokens (not for count_tokens), messages (non-empty; roles user/assistant, plus the
`system`-role messages current Claude Code sends, which carry text only), content (non-empty strings, known block
types per role, no empty or whitespace-only text blocks, images with a valid media type and data), the tool
protocol after merging consecutive same-role turns (every `tool_use` answered by a `tool_result` in the next user
message, tool_results first in it and only for ids of the previous assistant turn), tool_use ids
`^[a-zA-Z0-9_-]+$` and unique, thinking blocks with a non-empty signature, `system`, tools (names, input_schema of
type object), `thinking.budget_tokens` below max_tokens, and at most 4 `cache_control` breakpoints.
Unknown top-level fields are accepted: Anthropic keeps adding them, and ccm must pass them through.
"""

from __future__ import annotations

import re
from typing import Any

from .upstream import Rejected

TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
USER_BLOCKS = frozenset({"text", "image", "document", "tool_result", "search_result"})
ASSISTANT_BLOCKS = frozenset(
    {"text", "thinking", "redacted_thinking", "tool_use", "server_tool_use", "web_search_tool_result"}
)
TOOL_RESULT_BLOCKS = frozenset({"text", "image", "document", "search_result"})


def invalid(message: str) -> Rejected:
    return Rejected(400, message, "invalid_request_error")


def check_messages_request(body: Any, count_only: bool = False) -> None:
    if not isinstance(body, dict):
        raise invalid("body: Input should be an object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("model: Field required")
    if not count_only:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise invalid("max_tokens: Field required" if max_tokens is None else "max_tokens: must be at least 1")
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024 or budget >= max_tokens:
                raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`, which must be ≥ 1024")
    _check_system(body.get("system"))
    _check_tools(body.get("tools"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required")
    turns = _merged_turns(messages)
    _check_tool_protocol(turns)
    breakpoints = _count_key(body, "cache_control")
    if breakpoints > 4:
        raise invalid(f"A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}.")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or list")
    for i, block in enumerate(system):
        _check_text_block(block, f"system.{i}")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not TOOL_NAME.match(tool["name"]):
            raise invalid(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if tool["name"] in names:
            raise invalid(f"tools: Tool names must be unique. Duplicate: {tool['name']}")
        names.add(tool["name"])
        kind = tool.get("type")
        if kind in (None, "custom"):
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise invalid(f"tools.{i}.custom.input_schema.type: Input should be 'object'")


def _merged_turns(messages: list[Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(role, blocks) per turn, consecutive same-role messages merged, system-role messages set aside."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        blocks = _blocks(message.get("content"), where, role)
        if role == "system":
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))
    return turns


def _blocks(content: Any, where: str, role: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if not content.strip():
            raise invalid(f"{where}: text content blocks must contain non-whitespace text")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise invalid(f"{where}.content: messages must have non-empty content")
    allowed = {"user": USER_BLOCKS, "assistant": ASSISTANT_BLOCKS, "system": frozenset({"text"})}[role]
    for j, block in enumerate(content):
        here = f"{where}.content.{j}"
        kind = _check_tagged_block(block, here, allowed)
        if kind == "tool_use":
            if not isinstance(block.get("id"), str) or not TOOL_ID.match(block["id"]):
                raise invalid(f"{here}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict):
                raise invalid(f"{here}.tool_use: `name` and an object `input` are required")
        elif kind == "thinking":
            if not isinstance(block.get("signature"), str) or not block["signature"]:
                raise invalid(f"{here}.thinking.signature: Field required")
        elif kind == "redacted_thinking":
            if not isinstance(block.get("data"), str) or not block["data"]:
                raise invalid(f"{here}.redacted_thinking.data: Field required")
        elif kind == "tool_result":
            _check_tool_result(block, here)
    return content


def _check_tagged_block(block: Any, where: str, allowed: frozenset[str]) -> str | None:
    """A content block's `type`, refused unless `allowed`; text and image blocks are checked here, the rest by the
    caller."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in allowed:
        raise invalid(f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags")
    if kind == "text":
        _check_text_block(block, where)
    elif kind == "image":
        _check_image(block, where)
    return kind


def _check_text_block(block: Any, where: str) -> None:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise invalid(f"{where}: Input should be a text block")
    if not block["text"]:
        raise invalid(f"{where}: text content blocks must be non-empty")
    if not block["text"].strip():
        raise invalid(f"{where}: text content blocks must contain non-whitespace text")


def _check_image(block: dict[str, Any], where: str) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{where}.image.source: Field required")
    if source.get("type") == "base64":
        if source.get("media_type") not in MEDIA_TYPES:
            raise invalid(f"{where}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                          "'image/gif' or 'image/webp'")
        if not isinstance(source.get("data"), str) or not source["data"]:
            raise invalid(f"{where}.image.source.base64.data: Field required")
    elif source.get("type") != "url" or not isinstance(source.get("url"), str):
        raise invalid(f"{where}.image.source: Input tag '{source.get('type')}' does not match any of the expected tags")


def _check_tool_result(block: dict[str, Any], where: str) -> None:
    if not isinstance(block.get("tool_use_id"), str) or not TOOL_ID.match(block["tool_use_id"]):
        raise invalid(f"{where}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(f"{where}.tool_result.content: Input should be a valid string or list")
    for k, inner in enumerate(content):
        _check_tagged_block(inner, f"{where}.tool_result.content.{k}", TOOL_RESULT_BLOCKS)


def _check_tool_protocol(turns: list[tuple[str, list[dict[str, Any]]]]) -> None:
    seen_ids: set[str] = set()
    pending: list[str] = []  # tool_use ids of the previous assistant turn
    for n, (role, blocks) in enumerate(turns):
        if role == "assistant":
            if pending:
                raise _unanswered(pending, n - 1)
            pending = []
            for block in blocks:
                if block.get("type") == "tool_use":
                    if block["id"] in seen_ids:
                        raise invalid(f"messages.{n}: `tool_use` ids must be unique: {block['id']}")
                    seen_ids.add(block["id"])
                    pending.append(block["id"])
            continue
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        unexpected = [r for r in results if r not in pending]
        if unexpected:
            raise invalid(
                f"messages.{n}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: {unexpected[0]}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        missing = [p for p in pending if p not in results]
        if missing:
            raise _unanswered(missing, n - 1)
        first_other = next((i for i, b in enumerate(blocks) if b.get("type") != "tool_result"), len(blocks))
        if any(b.get("type") == "tool_result" for b in blocks[first_other:]):
            raise invalid(f"messages.{n}: `tool_result` blocks must come first in the content, before any other block")
        pending = []
    if pending:
        raise _unanswered(pending, len(turns) - 1)


def _unanswered(ids: list[str], turn: int) -> Rejected:
    return invalid(
        f"messages.{turn}: `tool_use` ids were found without `tool_result` blocks immediately after: "
        f"{', '.join(ids)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
    )


def _count_key(value: Any, key: str) -> int:
    if isinstance(value, dict):
        return sum((name == key) + _count_key(inner, key) for name, inner in value.items())
    if isinstance(value, list):
        return sum(_count_key(inner, key) for inner in value)
    return 0
