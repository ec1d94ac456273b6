"""What a request used, per billed class, and the pure functions that read it from each upstream's own usage shape.

`TokenUsage` is ccm's one usage type: an adapter's running counts become one when its reply is done (`ccm.providers.
base.Usage.billed`), a request's record carries it (`ccm.core.record`), and `ccm.ledger.cost.cost` prices it. The
classes partition the input: `input` is the uncached part only, so `input + cache_write_5m + cache_write_1h +
cache_read` is every prompt token, each counted once (tools that summed Anthropic's fields into one number overstated
cost 3-4x).

The readers are permissive: a field that is missing, null, negative, a bool or not an integer counts as zero, so a
partial report (a stream cut short) still gives what it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ccm.frozen import frozen


@frozen
class TokenUsage:
    """Tokens per class, and web-search requests, of one request (all attempts' billed usage, summed by the caller)."""

    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    web_search: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not."""
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read

    @property
    def tokens(self) -> int:
        """What a tokens-per-minute limit counts: every prompt token and every output token."""
        return self.prompt_tokens + self.output


TOKEN_CLASSES: tuple[str, ...] = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


# The readers take parsed JSON, whose objects are dicts: `isinstance(x, dict)` is a C check, `Mapping` an ABC's
# (~0.5 µs a call, a dozen calls a request).
def _count(raw: Any, name: str) -> int:
    if not isinstance(raw, dict):
        return 0
    value = raw.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _object(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    return value if isinstance(value, dict) else {}


# --- Anthropic Messages ---------------------------------------------------------------------------------------------


def from_anthropic(usage: Mapping[str, Any]) -> TokenUsage:
    """A Messages `usage` object (a whole message's, or a stream's merged one: see `merge_anthropic`).

    `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens` split the cache writes; an upstream
    that gives only `cache_creation_input_tokens` (older API versions, some compatible servers) wrote 5-minute
    entries, the only kind that existed then. Web searches: `server_tool_use.web_search_requests`.
    """
    split = _object(usage, "cache_creation")
    five, hour = _count(split, "ephemeral_5m_input_tokens"), _count(split, "ephemeral_1h_input_tokens")
    if "ephemeral_5m_input_tokens" not in split and "ephemeral_1h_input_tokens" not in split:
        five = _count(usage, "cache_creation_input_tokens")
    return TokenUsage(
        input=_count(usage, "input_tokens"),
        output=_count(usage, "output_tokens"),
        cache_write_5m=five,
        cache_write_1h=hour,
        cache_read=_count(usage, "cache_read_input_tokens"),
        web_search=_count(_object(usage, "server_tool_use"), "web_search_requests"),
    )


def merge_anthropic(start: Mapping[str, Any], *deltas: Mapping[str, Any]) -> dict[str, Any]:
    """A stream's usage: `message_start.message.usage` updated by each `message_delta.usage` in order.

    The counts in `message_delta` are cumulative (the whole message so far, not an increment), so a later value
    replaces an earlier one; a field a delta leaves out keeps the start's value. Nested objects merge the same way.
    """
    merged: dict[str, Any] = dict(start)
    for delta in deltas:
        for name, value in delta.items():
            if value is None:
                continue
            if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
                merged[name] = {**merged[name], **{k: v for k, v in value.items() if v is not None}}
            else:
                merged[name] = value
    return merged


# --- OpenAI Chat Completions ----------------------------------------------------------------------------------------


def from_openai_chat(usage: Mapping[str, Any]) -> TokenUsage:
    """A Chat Completions `usage` (the last chunk of a stream with `stream_options.include_usage`).

    `prompt_tokens` includes the cached part (`prompt_tokens_details.cached_tokens`; DeepSeek says
    `prompt_cache_hit_tokens`) and, on OpenRouter, the cache writes (`prompt_tokens_details.cache_write_tokens`,
    whose lifetime it does not say: counted as 5-minute writes, Anthropic's default). `completion_tokens` already
    includes reasoning tokens.
    """
    details = _object(usage, "prompt_tokens_details")
    cache_read = _count(details, "cached_tokens") or _count(usage, "prompt_cache_hit_tokens")
    cache_write = _count(details, "cache_write_tokens")
    return TokenUsage(
        input=max(_count(usage, "prompt_tokens") - cache_read - cache_write, 0),
        output=_count(usage, "completion_tokens"),
        cache_write_5m=cache_write,
        cache_read=cache_read,
    )


# --- OpenAI Responses -----------------------------------------------------------------------------------------------


def from_openai_responses(usage: Mapping[str, Any]) -> TokenUsage:
    """A Responses `usage`: `input_tokens` includes `input_tokens_details.cached_tokens`; `output_tokens` includes
    `output_tokens_details.reasoning_tokens`."""
    cached = _count(_object(usage, "input_tokens_details"), "cached_tokens")
    return TokenUsage(
        input=max(_count(usage, "input_tokens") - cached, 0),
        output=_count(usage, "output_tokens"),
        cache_read=cached,
    )


# --- Gemini ---------------------------------------------------------------------------------------------------------


def from_gemini(metadata: Mapping[str, Any]) -> TokenUsage:
    """Gemini's `usageMetadata`: `promptTokenCount` includes `cachedContentTokenCount`; tool-use prompt tokens
    (`toolUsePromptTokenCount`, e.g. grounding results) are input too. Output is `candidatesTokenCount` plus
    `thoughtsTokenCount`, which Gemini bills at the output rate but reports apart."""
    cached = _count(metadata, "cachedContentTokenCount")
    return TokenUsage(
        input=max(_count(metadata, "promptTokenCount") - cached, 0) + _count(metadata, "toolUsePromptTokenCount"),
        output=_count(metadata, "candidatesTokenCount") + _count(metadata, "thoughtsTokenCount"),
        cache_read=cached,
    )
