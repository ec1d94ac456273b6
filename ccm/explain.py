"""Where a request goes and why, as facts, JSON and text: what `ccm explain` prints and the admin page's "explain"
shows.

    request_facts(table, view)          what the rules read from the request
    explanation_json(decision, facts)   the matched rule, its reason, the target and the whole fallback chain
    explanation_text(decision, facts)   the same, for a terminal
    model_text(model)                   `alias = provider/model`
"""

from __future__ import annotations

from typing import Any

from ccm.route import Decision, RequestView
from ccm.table import Model, RoutingTable


def request_facts(table: RoutingTable, view: RequestView) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "model": view.model,
        "thinking": view.thinking,
        "effort": view.effort,
        "subagent": view.subagent,
        "websearch": view.web_search,
        "image": view.image,
        "tools": len(view.tool_names),
    }
    if view.subagent_tag is not None:
        facts["subagent_tag"] = view.subagent_tag
    if table.needs_token_count():
        facts["tokens"] = view.tokens
    return facts


def model_text(model: Model) -> str:
    upstream = f"{model.provider}/{model.model}"
    return upstream if model.name == upstream else f"{model.name} = {upstream}"


def explanation_json(decision: Decision, facts: dict[str, Any]) -> dict[str, Any]:
    rule = decision.rule
    return {
        "request": facts,
        "rule": None if rule is None else {
            "index": decision.rule_index + 1,
            "source": rule.source,
            "span": str(rule.span) if rule.span else None,
        },
        "reason": decision.reason,
        "target": decision.target.model_dump(mode="json"),
        "chain": [m.name for m in decision.chain],
        "strip_subagent_tag": decision.strip_subagent_tag,
    }


def _fact_text(name: str, value: Any) -> str:
    if value is True:
        return name
    if name == "tools":
        return f"{value} tools"
    return f"{name} {value:,}" if isinstance(value, int) else f"{name} {value}"


def explanation_text(decision: Decision, facts: dict[str, Any]) -> str:
    shown = ", ".join(_fact_text(k, v) for k, v in facts.items() if v not in (None, False, 0))
    skipped = decision.rule_index
    earlier = "" if skipped == 0 else f"; rule{'s 1–' if skipped > 1 else ' '}{skipped} did not match"
    lines = [
        f"request   {shown}",
        f"matched   {decision.reason}{earlier}",
        f"target    {model_text(decision.target)}",
    ]
    if len(decision.chain) > 1:
        lines.append("fallback  " + " → ".join(model_text(m) for m in decision.chain[1:]))
    else:
        lines.append("fallback  none")
    if decision.strip_subagent_tag:
        lines.append("note      the <CCM-SUBAGENT-MODEL> tag is removed from the system prompt before sending")
    return "\n".join(lines)
