"""Syntax nodes back to canonical text, one line each: what `ccm fmt` prints and what a compiled rule shows as its
`source` (so `explain` and logs quote a rule exactly as the formatter would write it)."""

from __future__ import annotations

from ccm.dsl import syntax as s


def condition_text(condition: s.Condition) -> str:
    if isinstance(condition, s.Atom):
        return " ".join([condition.keyword.text, *(value_text(a) for a in condition.args)])
    if isinstance(condition, s.Not):
        return f"not {condition_text(condition.operand)}"
    if isinstance(condition, s.And):
        return " and ".join(condition_text(c) for c in condition.operands)
    if isinstance(condition, s.Or):
        return " or ".join(condition_text(c) for c in condition.operands)
    return f"({condition_text(condition.inner)})"


def rule_text(rule: s.RouteRule) -> str:
    """The left side of a rule: its condition, or `default` / `direct`."""
    if rule.condition is not None:
        return condition_text(rule.condition)
    assert rule.keyword is not None
    return rule.keyword.text


def value_text(value: s.Arg | s.JsonValue) -> str:
    if isinstance(value, s.Word):
        return value.text
    if isinstance(value, (s.Str, s.Scalar)):
        return value.raw
    if isinstance(value, s.FileRef):
        return f"file({value.path.raw})"
    if isinstance(value, s.Env):
        default = f", {value.default.raw}" if value.default is not None else ""
        return f"env({value.name.raw}{default})"
    if isinstance(value, s.Range):
        return f"{value.low.text}..{value.high.text}"
    if isinstance(value, s.Object):
        if not value.members:
            return "{}"
        return "{ " + ", ".join(member_text(m) for m in value.members) + " }"
    if not value.items:
        return "[]"
    return "[" + ", ".join(value_text(v) for v in value.items) + "]"


def member_text(member: s.Member) -> str:
    separator = ": " if member.separator == ":" else " = "
    return f"{value_text(member.key)}{separator}{value_text(member.value)}"
