"""What the translating adapters share on the request side: Claude Code's billing block, and `force` / `drop`.

`apply_overrides` applies a model's `force` and `drop` to an upstream body, dotted paths included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Claude Code's first system block: Anthropic bookkeeping that changes between requests. Every translating adapter
# drops it, since it means nothing to other models and would defeat their prefix caches.
BILLING_HEADER = "x-anthropic-billing-header:"


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
