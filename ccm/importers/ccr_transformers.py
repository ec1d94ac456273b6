"""claude-code-router's transformers, read as what ccm does instead.

A CCR provider lists transformers (`"transformer": {"use": ["deepseek", ["maxtoken", {"max_tokens": 65536}]],
"deepseek-chat": {"use": ["tooluse"]}}`); each rewrites requests or replies. In ccm most of that is a provider's
`type`, a model's `max_output`, `force` or `quirks`, or something ccm always does; the rest is reported.

    wire_type(names) -> "anthropic" | "gemini" | "openai-responses" | "openai"
    effects(uses, model_id, path, report) -> Effects      (what one model gets from its provider's and its own list)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ccm.frozen import frozen
from ccm.importers.source import Path, Report, describe, dotted

# Transformers that pick the wire format: CCR names the provider's API by the transformer that speaks it.
_WIRE = {"anthropic": "anthropic", "gemini": "gemini", "openai-responses": "openai-responses",
         "openai.responses": "openai-responses", "openairesponses": "openai-responses", "responses": "openai-responses"}

# What ccm does anyway, so the transformer carries over with nothing to write.
_BUILT_IN = {
    "openai": "ccm speaks Chat Completions to `type openai` providers",
    "enhancetool": "ccm always repairs broken tool-call JSON",
    "cleancache": "ccm strips `cache_control` for OpenAI-compatible upstreams unless a model has `keep_cache_control`",
    "groq": "ccm strips `cache_control` for OpenAI-compatible upstreams",
    "streamoptions": "ccm always asks for usage in streams (`stream_options`)",
}

# Transformers for backends ccm has no adapter for: the provider cannot work as imported.
_NO_ADAPTER = {"vertex-gemini", "vertex-claude", "gemini-cli", "qwen-cli", "rovo-cli", "chutes-glm", "vertex"}


@dataclass
class Effects:
    max_output: int | None = None
    force: dict[str, Any] = field(default_factory=dict)
    quirks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # written as comments above the model
    provider_notes: list[str] = field(default_factory=list)  # from the provider's own list: above the provider

    def cap(self, limit: int) -> None:
        # Every capping transformer lowers max_tokens to its limit in turn: the smallest one wins.
        self.max_output = limit if self.max_output is None else min(self.max_output, limit)

    def quirk(self, name: str) -> None:
        if name not in self.quirks:
            self.quirks.append(name)


@frozen
class Use:
    name: str  # lower-cased: CCR's own examples write both `Anthropic` and `anthropic`
    options: dict[str, Any] | None
    path: Path


def parse_uses(raw: Any, path: Path, report: Report) -> list[Use]:
    """`["deepseek", ["maxtoken", {"max_tokens": 65536}]]` → uses; anything else is an error at its line."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        report.error(path, f"`{dotted(path)}` must be a list of transformers, not {describe(raw)}")
        return []
    uses: list[Use] = []
    for index, entry in enumerate(raw):
        where = (*path, index)
        if isinstance(entry, str):
            uses.append(Use(entry.lower(), None, where))
        elif (isinstance(entry, list) and entry and isinstance(entry[0], str)
              and (len(entry) == 1 or (len(entry) == 2 and isinstance(entry[1], dict)))):
            uses.append(Use(entry[0].lower(), entry[1] if len(entry) == 2 else None, where))
        else:
            report.error(where, f"`{dotted(where)}` must be a transformer name or [name, {{options}}]")
    return uses


def wire_type(uses: Sequence[Use]) -> str:
    for use in uses:
        if use.name in _WIRE:
            return _WIRE[use.name]
    return "openai"


def unsupported_backend(uses: Sequence[Use]) -> Use | None:
    return next((use for use in uses if use.name in _NO_ADAPTER), None)


def effects(provider_uses: Sequence[Use], model_uses: Sequence[Use], model_id: str, report: Report,
            provider: str) -> Effects:
    """What one model of a provider gets from the provider's transformers, then its own (CCR's order)."""
    out = Effects()
    for use in [*provider_uses, *model_uses]:
        _apply(use, out, model_id, report, provider, per_model=use in model_uses)
    return out


def _apply(use: Use, out: Effects, model_id: str, report: Report, provider: str, *, per_model: bool) -> None:
    options = use.options or {}
    notes = out.notes if per_model else out.provider_notes
    where = f"`{provider},{model_id}`" if per_model else f"provider `{provider}`"
    if use.name in _WIRE:
        if per_model:
            report.warn(use.path, f"{where}: a per-model `{use.name}` transformer is not carried over (in ccm the "
                                  f"wire format belongs to the provider: declare a second provider for it)")
        return
    if use.name in _BUILT_IN:
        if use.name == "enhancetool":
            notes.append("CCR's enhancetool: ccm always repairs broken tool-call JSON.")
        return
    if use.name in _NO_ADAPTER:
        return  # reported once, for the provider
    if use.name == "deepseek":
        out.cap(8192)
        notes.append("CCR's deepseek transformer capped max_tokens at 8192 (`max_output`).")
    elif use.name == "maxtoken":
        limit = options.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            out.cap(limit)
        else:
            report.warn(use.path, f"{where}: `maxtoken` without a positive `max_tokens` option is not carried over")
    elif use.name == "maxcompletiontokens":
        out.quirk("max_completion_tokens")
    elif use.name == "sampling":
        limit = options.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            out.cap(limit)
        for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
            if key in options:
                out.force[key] = options[key]
    elif use.name == "customparams":
        out.force.update(options)
        if options:
            notes.append("CCR's customparams kept a value the client sent; ccm's `force` always sets it.")
    elif use.name == "openrouter":
        out.force.update(options)  # e.g. OpenRouter's `provider` routing preferences
        if "claude" in model_id:
            out.quirk("keep_cache_control")  # CCR's openrouter transformer kept cache_control for Claude models
    elif use.name == "reasoning":
        if options.get("enable", True) is False:
            out.force["enable_thinking"] = False
        else:
            out.quirk("replay_reasoning")
            notes.append("CCR's reasoning transformer: ccm reads `reasoning_content` always and, with "
                             "`replay_reasoning`, sends it back; it sets no `enable_thinking` (add it to `force`).")
    else:
        what = {"tooluse": "it forced tool_choice `required` and added an ExitTool",
                "forcereasoning": "it put reasoning into the prompt as <reasoning_content> tags"}.get(use.name)
        report.warn(use.path, f"{where}: transformer `{use.name}` has no ccm equivalent and is not carried over"
                              + (f" ({what})" if what else ""))
