"""A `RoutePlan` → the text of a routes.ccm, in the formatter's canonical layout.

The writer builds plain text statement by statement, then hands it to `ccm fmt`'s own formatter, so an imported
file is `ccm fmt --check` clean by construction and aligned like any other. Strings are written with JSON escapes,
which the language shares; keys never appear as values (a plan only holds `Env` references for them).
"""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from typing import Any

from ccm.dsl.format import format_source
from ccm.importers.plan import Env, ModelPlan, ProviderPlan, RoutePlan, RulePlan, TestPlan, Text, is_name, tokens_text

WIDTH = 116  # comment lines wrap here, within the formatter's 120 columns


def write_route_file(plan: RoutePlan, name: str = "routes.ccm") -> str:
    return format_source(route_file_text(plan), name)


def route_file_text(plan: RoutePlan) -> str:
    out: list[str] = [*_comment(plan.title)]
    if plan.not_carried:
        out += ["#", "# Not carried over, or needing a step from you (`ccm import` printed these as warnings too):"]
        for line in plan.not_carried:
            out += _comment([f"- {line}"], hanging="  ")
    out.append("")
    settings = _settings(plan)
    if settings:
        out += [*settings, ""]
    for provider in plan.providers:
        out += [*_provider(provider), ""]
    for model in plan.models:
        out += _model(model)
    out += ["", "route {"]
    for rule in plan.rules:
        out += _rule(rule)
    out += ["}", ""]
    if plan.fallbacks:
        out += [f"fallback {' -> '.join([head, *chain])}" for head, chain in plan.fallbacks]
        out.append("")
    if plan.retry is not None:
        out.append(f"retry {plan.retry}")
    if plan.breaker is not None:
        out.append(f"breaker {plan.breaker}")
    if plan.retry is not None or plan.breaker is not None:
        out.append("")
    for test in plan.tests:
        out += [*_test(test), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _comment(lines: list[str], hanging: str = "") -> list[str]:
    out: list[str] = []
    for line in lines:
        if not line:
            out.append("#")
            continue
        wrapped = textwrap.wrap(line, WIDTH - 2, subsequent_indent=hanging, break_on_hyphens=False,
                                break_long_words=False)
        out += [f"# {part}" for part in wrapped]
    return out


def string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def value(text: Text) -> str:
    if isinstance(text, Env):
        default = f", {string(text.default)}" if text.default is not None else ""
        return f"env({string(text.name)}{default})"
    return string(text)


def json_value(item: Any) -> str:
    """A JSON-ish value as the language writes it (`force`, test requests): bare keys where they are names."""
    if isinstance(item, dict):
        if not item:
            return "{}"
        members = [f"{key if is_name(key) else string(key)}: {json_value(v)}" for key, v in item.items()]
        return "{ " + ", ".join(members) + " }"
    if isinstance(item, (list, tuple)):
        return "[" + ", ".join(json_value(v) for v in item) + "]"
    if item is True:
        return "true"
    if item is False:
        return "false"
    if item is None:
        return "null"
    if isinstance(item, (int, float)):
        return json.dumps(item)
    return string(str(item))


def _settings(plan: RoutePlan) -> list[str]:
    items: list[str] = []
    if plan.auth:
        items.append("  auth " + " ".join(value(v) for v in plan.auth))
    if plan.background:
        items.append("  background " + " ".join(string(g) for g in plan.background))
    return ["settings {", *items, "}"] if items else []


def _provider(provider: ProviderPlan) -> list[str]:
    lines = [*_comment(provider.comments), f"provider {provider.name} {{", f"  type {provider.type}",
             f"  url {value(provider.url)}"]
    if provider.key is not None:
        lines.append(f"  key {value(provider.key)}")
    if provider.headers:
        members = ", ".join(f"{string(k)} = {value(v)}" for k, v in provider.headers.items())
        lines.append(f"  headers {{ {members} }}")
    if provider.timeouts:
        lines.append("  timeout " + " ".join(f"{k} {v}" for k, v in provider.timeouts.items()))
    if provider.concurrency is not None:
        lines.append(f"  concurrency {provider.concurrency}")
    return [*lines, "}"]


def _price(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


def _model(model: ModelPlan) -> list[str]:
    deployments = ", ".join(d.target + (f" weight {d.weight}" if d.weight is not None else "")
                            for d in model.deployments)
    items: list[str] = []
    if model.context is not None:
        items.append(f"context {tokens_text(model.context)}")
    if model.max_output is not None:
        items.append(f"max_output {tokens_text(model.max_output)}")
    if model.price:
        items.append("price " + " ".join(f"{k} {_price(v)}" for k, v in model.price.items()))
    if model.force:
        items.append(f"force {json_value(model.force)}")
    if model.drop:
        items.append("drop " + " ".join(model.drop))
    if model.quirks:
        items.append("quirks " + " ".join(model.quirks))
    if model.balance is not None:
        items.append(f"balance {model.balance}")
    head = f"model {model.alias} = {deployments}"
    body = [head + " {", *(f"  {item}" for item in items), "}"] if items else [head]
    return [*_comment(model.comments), *body]


def _rule(rule: RulePlan) -> list[str]:
    if rule.condition is None:
        # `direct` has no arrow to align a trailing comment with: its comment goes on the line above
        return [*(f"  {line}" for line in _comment([rule.comment] if rule.comment else [])), "  direct"]
    return [f"  {rule.condition} -> {rule.target}" + (f"  # {rule.comment}" if rule.comment else "")]


def _test(test: TestPlan) -> list[str]:
    lines = [f"test {string(test.name)} {{", f"  request {json_value(test.request)}"]
    if test.tokens is not None:
        lines.append(f"  tokens {test.tokens}")
    return [*lines, f"  expect {test.expect}", "}"]
