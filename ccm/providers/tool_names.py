"""Tool names across wire formats, both directions: one mapping for every translating adapter.

Each upstream takes function names by its own rule (`NameRule`): OpenAI Chat Completions and Responses
`^[a-zA-Z0-9_-]{1,64}$`, Gemini `^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$`, answering 400 otherwise. Claude Code's own tools
pass everywhere; MCP servers produce long and dotted names (`mcp__<server>__<tool>`). A name that breaks the
upstream's rule is sent as `upstream_name`: the characters the rule refuses replaced by `_`, a leading `_` when the
first one may not start a name, cut to leave room for `_` + 8 hex of the original's sha256 — stable across requests
(prefix caches stay warm) and distinct for distinct names. `ToolNames` is one request's mapping: the adapter builds
it from the tools offered and the calls in the history (`for_request`), the request side writes `upstream(name)`,
the reply side, streamed or not, gives the client `client(name)` back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any

from ccm.frozen import frozen


@frozen
class NameRule:
    """What an upstream accepts as a function name."""

    valid: re.Pattern[str]
    refused_char: re.Pattern[str]  # a character the rule does not allow anywhere
    max_length: int
    first_char: re.Pattern[str] | None = None  # what the first character must be, when it is stricter


CHAT = NameRule(re.compile(r"^[a-zA-Z0-9_-]{1,64}\Z"), re.compile(r"[^a-zA-Z0-9_-]"), 64)
RESPONSES = CHAT
GEMINI = NameRule(
    re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}\Z"), re.compile(r"[^a-zA-Z0-9_.:-]"), 128, re.compile(r"[a-zA-Z_]")
)

_HASH = 8


def upstream_name(name: str, rule: NameRule) -> str:
    """The name an upstream with `rule` gets for the client's tool `name`: itself when valid, else rewritten."""
    if rule.valid.match(name):
        return name
    cleaned = rule.refused_char.sub("_", name)
    if rule.first_char is not None and not rule.first_char.match(cleaned[:1]):
        cleaned = "_" + cleaned
    prefix = cleaned[: rule.max_length - _HASH - 1] or "tool"
    return f"{prefix}_{hashlib.sha256(name.encode()).hexdigest()[:_HASH]}"


@frozen
class ToolNames:
    """One request's tool names for one upstream rule: the renamed ones, upstream name → the client's."""

    rule: NameRule = CHAT
    renamed: Mapping[str, str] = field(default_factory=dict)

    def upstream(self, name: str) -> str:
        return upstream_name(name, self.rule)

    def client(self, upstream: str) -> str:
        return self.renamed.get(upstream, upstream)

    @classmethod
    def of(cls, names: Iterable[str], rule: NameRule = CHAT) -> ToolNames:
        return cls(rule, {upstream_name(n, rule): n for n in names if not rule.valid.match(n)})

    @classmethod
    def for_request(cls, body: Mapping[str, Any], rule: NameRule) -> ToolNames:
        """The mapping for a client's request: the custom tools it offers and the calls its history holds."""
        return cls.of(_request_names(body), rule)


def _request_names(body: Mapping[str, Any]) -> Iterable[str]:
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("type") in (None, "custom") and isinstance(tool.get("name"), str):
            yield tool["name"]
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                yield block["name"]
