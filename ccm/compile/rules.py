"""The route block and fallback chains: conditions to table conditions, targets to model names, plus the checks
that need the rules in order (missing or misplaced `default`, shadowed rules, long-context targets too small,
fallback cycles)."""

from __future__ import annotations

from collections.abc import Callable

from ccm import table as t
from ccm.compile import values
from ccm.compile.context import Context, table_span
from ccm.dsl import syntax as s
from ccm.dsl.printer import rule_text
from ccm.frozen import frozen

FLAGS: dict[str, type[t.Frozen]] = {
    "websearch": t.WebSearch,
    "subagent": t.Subagent,
    "thinking": t.Thinking,
    "background": t.Background,
    "image": t.Image,
}


def _exact(text: str) -> str:
    """A glob matching `text` literally (`==` in the file; the table only knows globs)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def condition(ctx: Context, node: s.Condition) -> t.Condition | None:
    if isinstance(node, s.Paren):
        return condition(ctx, node.inner)
    if isinstance(node, s.Not):
        operand = condition(ctx, node.operand)
        return t.Not(operand=operand) if operand is not None else None
    if isinstance(node, (s.And, s.Or)):
        parts = [condition(ctx, c) for c in node.operands]
        if any(p is None for p in parts):
            return None
        return t.All(operands=tuple(parts)) if isinstance(node, s.And) else t.AnyOf(operands=tuple(parts))  # type: ignore[arg-type]
    return _atom(ctx, node)


def _atom(ctx: Context, atom: s.Atom) -> t.Condition | None:
    keyword = atom.keyword.text
    args = atom.args
    if keyword in FLAGS:
        return FLAGS[keyword]()  # type: ignore[return-value]
    if keyword == "tokens":
        op, amount = args
        assert isinstance(op, s.Word) and isinstance(amount, s.Word)
        count = ctx.read(values.token_count, amount)
        return t.Tokens(op=op.text, value=count) if count is not None else None  # type: ignore[arg-type]
    if keyword == "effort":
        op, level = args
        assert isinstance(op, s.Word) and isinstance(level, s.Word)
        chosen = ctx.choose(level, t.EFFORT_ORDER, "effort level")
        return t.Effort(op=op.text, level=chosen) if chosen is not None else None  # type: ignore[arg-type]
    if keyword == "model":
        op, text = args
        assert isinstance(op, s.Word) and isinstance(text, s.Str)
        return _match(ctx, op, text, lambda glob: t.ModelName(glob=glob), "model")
    if keyword == "header":
        name = args[0]
        assert isinstance(name, s.Str)
        if not name.value:
            ctx.error(name.span, "empty header name")
            return None
        header = name.value.lower()
        if len(args) == 1:
            return t.Header(name=header)
        op, text = args[1], args[2]
        assert isinstance(op, s.Word) and isinstance(text, s.Str)
        return _match(ctx, op, text, lambda glob: t.Header(name=header, glob=glob), "header")
    if keyword in ("key", "plan", "team"):
        op, text = args
        assert isinstance(op, s.Word) and isinstance(text, s.Str)
        field = keyword
        return _match(ctx, op, text, lambda glob: t.CallerName(field=field, glob=glob), keyword)  # type: ignore[arg-type]
    if keyword == "budget":
        op, amount = args
        assert isinstance(op, s.Word) and isinstance(amount, s.Word)
        share = ctx.read(values.share, amount)
        return t.Budget(op=op.text, percent=share) if share is not None else None  # type: ignore[arg-type]
    if keyword == "spent":
        period, op, amount = args
        assert isinstance(period, s.Word) and isinstance(op, s.Word) and isinstance(amount, s.Word)
        chosen = ctx.choose(period, ("today", "week", "month"), "spending period")
        usd = ctx.read(values.dollars, amount)
        if chosen is None or usd is None:
            return None
        return t.Spent(period=chosen, op=op.text, usd=usd)  # type: ignore[arg-type]
    assert keyword == "tool"
    (glob,) = args
    assert isinstance(glob, s.Str)
    checked = ctx.glob(glob)
    return t.Tool(glob=checked) if checked is not None else None


def _match(
    ctx: Context, op: s.Word, text: s.Str, build: Callable[[str], t.Condition], what: str
) -> t.Condition | None:
    if op.text == "~":
        glob = ctx.glob(text)
        return build(glob) if glob is not None else None
    if op.text in ("==", "!="):
        exact = build(_exact(text.value))
        return exact if op.text == "==" else t.Not(operand=exact)
    ctx.error(op.span, f"`{what}` is matched with `~` (glob), `==` or `!=`, not `{op.text}`")
    return None


# --- the route block ---------------------------------------------------------------------------------------------


@frozen(slots=False)
class CompiledRule:
    rule: t.Rule
    written: s.RouteRule | None  # None for the implicit `direct`


def route_block(ctx: Context, block: s.RouteBlock, direct_on: bool,
                direct_off_span: s.Span | None) -> list[CompiledRule]:
    compiled: list[CompiledRule] = []
    explicit_direct = False
    for written in block.rules:
        source = rule_text(written)
        span = table_span(written.span)
        if written.keyword is not None and written.keyword.text == "direct":
            if explicit_direct:
                ctx.error(written.span, "`direct` is placed twice")
            explicit_direct = True
            if not direct_on:
                ctx.error(written.span, "`direct` is placed in the route block but turned off in settings",
                          f"remove this line or `direct off` ({direct_off_span})")
            compiled.append(CompiledRule(t.Rule(condition=t.Direct(), target=None, source=source, span=span), written))
            continue
        assert written.target is not None
        target = ctx.target(written.target)
        cond = t.Default() if written.condition is None else condition(ctx, written.condition)
        if target is not None and cond is not None:
            rule = t.Rule(condition=cond, target=target, source=source, span=span)
            compiled.append(CompiledRule(rule, written))
    if not explicit_direct and direct_on:
        compiled.insert(0, CompiledRule(t.Rule(condition=t.Direct(), target=None, source="direct"), None))
    if not any(w.keyword is not None and w.keyword.text == "default" for w in block.rules):
        ctx.error(block.span, "the route block has no `default` rule",
                  "add `default -> NAME` as the last rule: it answers every request no other rule takes")
    _report_unreachable(ctx, compiled)
    _check_long_context(ctx, compiled)
    return compiled


def _report_unreachable(ctx: Context, compiled: list[CompiledRule]) -> None:
    first_seen: dict[t.Condition, CompiledRule] = {}
    default: CompiledRule | None = None
    for entry in compiled:
        written = entry.written
        if written is None:
            continue
        if default is not None:
            ctx.warning(written.span,
                        f"unreachable rule: `default` ({default.rule.span}) already answers every request",
                        "move this rule above `default`")
            continue
        condition_key = entry.rule.condition
        if isinstance(condition_key, t.Default):
            default = entry
        elif condition_key in first_seen and not isinstance(condition_key, t.Direct):
            earlier = first_seen[condition_key]
            ctx.warning(written.span, f"unreachable rule: `{entry.rule.source}` is already matched by the rule at "
                                      f"{earlier.rule.span}", "remove it, or narrow the earlier rule")
        else:
            first_seen.setdefault(condition_key, entry)


def _long_context_thresholds(cond: t.Condition, negated: bool = False) -> list[int]:
    """Token counts a condition guarantees a matching request exceeds (`tokens > N` → N+1, also nested)."""
    if isinstance(cond, t.Tokens) and not negated:
        if cond.op == ">":
            return [cond.value + 1]
        if cond.op == ">=":
            return [cond.value]
    if isinstance(cond, t.Tokens) and negated:
        if cond.op == "<=":
            return [cond.value + 1]
        if cond.op == "<":
            return [cond.value]
    if isinstance(cond, t.Not):
        return _long_context_thresholds(cond.operand, not negated)
    if isinstance(cond, t.All) and not negated:
        return [n for c in cond.operands for n in _long_context_thresholds(c)]
    if isinstance(cond, t.AnyOf) and negated:  # not (a or b) = not a and not b
        return [n for c in cond.operands for n in _long_context_thresholds(c, True)]
    return []


def _check_long_context(ctx: Context, compiled: list[CompiledRule]) -> None:
    for entry in compiled:
        rule, written = entry.rule, entry.written
        if written is None or written.target is None or rule.target is None:
            continue
        needed = max(_long_context_thresholds(rule.condition), default=0)
        model = ctx.models.get(rule.target)
        if needed and model is not None and model.context is not None and model.context < needed:
            ctx.error(written.target.span,
                      f"`{rule.target}` has a context window of {model.context:,} tokens, but this rule sends it "
                      f"requests of {needed:,} tokens or more",
                      "route long requests to a model with a larger `context`, or raise the threshold")


# --- fallbacks ---------------------------------------------------------------------------------------------------


def fallbacks(ctx: Context, nodes: list[s.Fallback]) -> dict[str, tuple[str, ...]]:
    chains: dict[str, tuple[str, ...]] = {}
    heads: dict[str, s.Fallback] = {}
    for node in nodes:
        names = [ctx.target(word) for word in node.chain]
        head_word = node.chain[0]
        if any(n is None for n in names):
            continue
        head, rest = names[0], names[1:]
        assert head is not None
        if head in heads:
            ctx.error(head_word.span, f"`{head}` already has a fallback chain", f"at {heads[head].span}; "
                                                                                "join them into one chain")
            continue
        heads[head] = node
        # Chains do not compose (a fallback's own chain is not followed), so the only cycle is within one chain.
        seen = {head}
        for word, name in zip(node.chain[1:], rest, strict=True):
            if name == head:
                ctx.error(word.span, f"fallback cycle: `{head}` falls back to itself", "remove it from its own chain")
            elif name in seen:
                ctx.error(word.span, f"`{name}` appears twice in the fallback chain of `{head}`",
                          "each model may appear once in a chain")
            seen.add(name)  # type: ignore[arg-type]
        chains[head] = tuple(n for n in rest if n is not None)
    return chains

