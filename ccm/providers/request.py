"""What the translating adapters share on the request side: Claude Code's billing block, tool parameter schemas, the
text of the blocks no upstream has a form for (`search_result`, ToolSearch's `tool_reference`), saying what an
upstream cannot take, and `force` / `drop`.

`apply_overrides` applies a model's `force` and `drop` to an upstream body, dotted paths included.
`client_identity` reads who is asking from `metadata.user_id` for the upstreams that take it (OpenAI's `user`,
`prompt_cache_key`, `safety_identifier`): the session id, and a hash of the account, never the raw value.
`unsupported` logs, once per process for each adapter and field, that a field of the client's request has no
equivalent upstream and is not sent (a warning an operator sees once, not a line per request).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ccm.frozen import frozen

log = logging.getLogger("ccm.providers")

# Claude Code's first system block: Anthropic bookkeeping that changes between requests. Every translating adapter
# drops it, since it means nothing to other models and would defeat their prefix caches.
BILLING_HEADER = "x-anthropic-billing-header:"


_OLD_USER_ID = re.compile(r"^(user_[0-9a-fA-F]+)_account_.*_session_([0-9a-fA-F-]+)$")
_ID_LIMIT = 64  # OpenAI's maximum for `user` and `safety_identifier`


@frozen
class ClientIdentity:
    """Who is asking, in values safe to send upstream. `session`: Claude Code's session id (a stable hash of a
    `user_id` ccm cannot read); `user`: a hash of the account (else the device), never the value itself."""

    session: str | None = None
    user: str | None = None


def client_identity(body: Mapping[str, Any]) -> ClientIdentity:
    """`metadata.user_id` read: current Claude Code sends a JSON object as a string (`device_id`, `account_uuid`,
    `session_id`), older ones `user_<hash>_account_<uuid>_session_<uuid>`."""
    metadata = body.get("metadata")
    raw = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(raw, str) or not raw:
        return ClientIdentity()
    try:
        parsed = orjson.loads(raw) if raw.startswith("{") else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("session_id"), str) and parsed["session_id"]:
        who = next((parsed[k] for k in ("account_uuid", "device_id") if isinstance(parsed.get(k), str) and parsed[k]),
                   None)
        return ClientIdentity(_bounded(parsed["session_id"]), _digest(who) if who else None)
    old = _OLD_USER_ID.match(raw)
    if old:
        return ClientIdentity(_bounded(old.group(2)), _digest(old.group(1).removeprefix("user_")))
    return ClientIdentity(_digest(raw))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _bounded(value: str) -> str:
    return value if len(value) <= _ID_LIMIT else _digest(value)


def search_result_text(block: Mapping[str, Any]) -> str:
    """A `search_result` block as text, the same on every adapter: its title and source, then its text."""
    content = block.get("content")
    texts = [c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)] if isinstance(
        content, list) else []
    head = " ".join(str(block[k]) for k in ("title", "source") if isinstance(block.get(k), str) and block[k])
    return "\n".join(t for t in [head, *texts] if t)


def tool_reference_text(block: Mapping[str, Any]) -> str:
    """A `tool_reference` block (what Claude Code's ToolSearch answers with: a deferred tool now loaded) as text,
    the same on every adapter; "" when it names no tool."""
    name = block.get("tool_name")
    return f"[tool {name} is now available]" if isinstance(name, str) and name else ""


def tool_parameters(schema: Any) -> dict[str, Any]:
    """A tool's `input_schema` as function parameters: `$schema` removed (meta only, and some servers reject it,
    Gemini's OpenAI endpoint among them); a missing schema is an empty object schema. The input is not modified."""
    if not isinstance(schema, dict):
        return {"type": "object", "properties": {}}
    return {k: v for k, v in schema.items() if k != "$schema"}


_said: set[tuple[str, str]] = set()


def unsupported(adapter: str, field: str, why: str) -> None:
    """Says once per process that `field` of the client's requests cannot be sent to an `adapter` upstream."""
    if (adapter, field) in _said:
        return
    _said.add((adapter, field))
    log.warning("%s upstreams get no `%s`: %s (said once; later requests drop it silently)", adapter, field, why)


def reset_unsupported_warnings() -> None:
    """Forget what `unsupported` said (tests)."""
    _said.clear()


def apply_overrides(body: dict[str, Any], force: Iterable[tuple[str, Any]], drop: Iterable[str]) -> dict[str, Any]:
    """`force` sets keys, then `drop` removes them, in the upstream's own wire format; `a.b.c` addresses nested
    objects. Dicts along a written path are copied first, so shared (cached) parts of the body are never modified."""
    for path, value in force:
        _set(body, path.split("."), value)
    for path in drop:
        _remove(body, path.split("."))
    return body


def _set(body: dict[str, Any], keys: list[str], value: Any) -> None:
    node = body
    for key in keys[:-1]:
        child = node.get(key)
        node[key] = dict(child) if isinstance(child, Mapping) else {}
        node = node[key]
    node[keys[-1]] = value


def _remove(body: dict[str, Any], keys: list[str]) -> None:
    node = body
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, Mapping):
            return
        node[key] = dict(child)
        node = node[key]
    node.pop(keys[-1], None)
