"""The requests an imported file's tests send: one per situation the old routers told apart.

Each is the smallest Messages body that shows the situation the way Claude Code sends it (a haiku model for
background work, a `web_search` server tool, a thinking budget, an image), so a test states only what it is about.
"""

from __future__ import annotations

from typing import Any

MAIN_MODEL = "claude-opus-5-5"  # what Claude Code's main agent asks for
BACKGROUND_MODEL = "claude-haiku-5-5"  # what its background work (titles, summaries) asks for


def plain(model: str = MAIN_MODEL) -> dict[str, Any]:
    return {"model": model}


def thinking() -> dict[str, Any]:
    return {"model": MAIN_MODEL, "thinking": {"type": "enabled", "budget_tokens": 10000}}


def web_search(with_thinking: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MAIN_MODEL,
                            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}]}
    if with_thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": 10000}
    return body


def image() -> dict[str, Any]:
    picture = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    return {"model": MAIN_MODEL,
            "messages": [{"role": "user", "content": [picture, {"type": "text", "text": "what is this?"}]}]}
