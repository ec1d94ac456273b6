"""The passthrough's request side: the client's body as Anthropic gets it.

`passthrough_body(call)` is `call.raw`, byte for byte, unless something has to change; then a shallow copy is
re-serialised with only these changes (the client's parsed body is never mutated: fallbacks reuse it):
    - `model` becomes the routed upstream model id;
    - `max_tokens` is clamped to the model's `max_output` (and a thinking budget kept below it);
    - thinking blocks without a signature are removed: they come from another provider's answer in the history,
      and Anthropic rejects them (PROTOCOL §8, pitfall 9). Signed blocks are never touched.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccm.providers.base import Call


def passthrough_body(call: Call) -> bytes:
    """`call.raw` when the upstream can take it as is; otherwise the minimal rewrite, serialised once."""
    body = call.body
    model = call.model
    changes: dict[str, Any] = {}
    if body.get("model") != model.model:
        changes["model"] = model.model
    max_tokens = body.get("max_tokens")
    if model.max_output is not None and isinstance(max_tokens, int) and max_tokens > model.max_output:
        changes["max_tokens"] = model.max_output
        thinking = body.get("thinking")
        if (isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int)
                and thinking["budget_tokens"] >= model.max_output):
            changes["thinking"] = {**thinking, "budget_tokens": model.max_output - 1}
    messages = _without_unsigned_thinking(body.get("messages"))
    if messages is not None:
        changes["messages"] = messages
    if not changes and call.raw is not None:
        return call.raw
    return orjson.dumps({**body, **changes} if changes else body)


def _without_unsigned_thinking(messages: Any) -> list[Any] | None:
    """The messages with unsigned thinking blocks removed, or None when there are none (the common case)."""
    if not isinstance(messages, list):
        return None
    rewritten: list[Any] | None = None
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not any(_unsigned_thinking(block) for block in content):
            if rewritten is not None:
                rewritten.append(message)
            continue
        if rewritten is None:
            rewritten = list(messages[:index])
        kept = [block for block in content if not _unsigned_thinking(block)]
        if kept:  # a turn that held nothing else disappears; Anthropic merges the neighbours it leaves
            rewritten.append({**message, "content": kept})
    return rewritten


def _unsigned_thinking(block: Any) -> bool:
    """A thinking block Anthropic did not sign: none or an empty signature (OpenAI-compatible history), or one ccm
    minted to carry another provider's state (`ccm.gemini.…`). Anthropic rejects both with a 400."""
    if not isinstance(block, dict) or block.get("type") != "thinking":
        return False
    signature = block.get("signature")
    return not signature or (isinstance(signature, str) and signature.startswith("ccm."))
