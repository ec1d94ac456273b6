"""What the translating adapters share on the request side: Claude Code's billing block, tool parameter schemas, the
text of the blocks no upstream has a form for (`search_result`, ToolSearch's `tool_reference`), saying what an
upstream cannot take, and `force` / `drop`.

`apply_overrides` applies a model's `force` and `drop` to an upstream body, dotted paths included.
`unsupported` logs, once per process for each adapter and field, that a field of the client's request has no
equivalent upstream and is not sent (a warning an operator sees once, not a line per request).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("ccm.providers")

# Claude Code's first system block: Anthropic bookkeeping that changes between requests. Every translating adapter
# drops it, since it means nothing to other models and would defeat their prefix caches.
BILLING_HEADER = "x-anthropic-billing-header:"


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
