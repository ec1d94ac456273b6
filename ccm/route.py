"""Pick a route for a request: `select_route(table, request) -> Decision`.

Pure (no I/O) and cheap: the server, `ccm explain` and the in-file tests all call it. Everything that depends only on
the table (condition matchers, glob regexes, fallback chains) is built once per table and kept on it; everything
that depends on the request is a lazily computed fact of a `RequestView`, so a rule list that never mentions images
never scans for images, and the prompt is tokenized only when a `tokens` condition is actually evaluated.

Rules are tried in order; the first whose condition holds wins. `direct` (inserted first by the compiler unless the
file places or disables it) routes a request that names its target itself: a declared alias, `provider/model`
(also CCR's `provider,model`) with a declared provider, or a `<CCM-SUBAGENT-MODEL>` tag in the system prompt.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import cached_property
from typing import Any

from ccm.frozen import frozen
from ccm.table import (
    EFFORT_ORDER,
    All,
    AnyOf,
    Background,
    Budget,
    CallerName,
    Comparison,
    Condition,
    Default,
    Direct,
    Effort,
    EffortLevel,
    Header,
    Image,
    Model,
    ModelName,
    Not,
    RoutingTable,
    Rule,
    Spent,
    Standing,
    Subagent,
    Thinking,
    Tokens,
    Tool,
    WebSearch,
)

TokenCounter = Callable[[Mapping[str, Any]], int]

SUBAGENT_OPEN = "<CCM-SUBAGENT-MODEL>"
SUBAGENT_CLOSE = "</CCM-SUBAGENT-MODEL>"
SUBAGENT_MARKER = "cc_is_subagent=true"
EFFORT_RANK: dict[str, int] = {level: rank for rank, level in enumerate(EFFORT_ORDER)}


@frozen
class Decision:
    chain: tuple[Model, ...]  # the target first, then its fallbacks
    rule: Rule | None
    rule_index: int
    reason: str
    strip_subagent_tag: bool = False

    @property
    def target(self) -> Model:
        return self.chain[0]


class NoRouteError(Exception):
    """No rule matched. The compiler requires a `default` rule, so only a hand-built table can raise this."""


# --- request facts -------------------------------------------------------------------------------------------------


# The tag is found with str.find, not a regex: `<TAG>\s*(.*?)\s*</TAG>` backtracks cubically on a run of whitespace
# (the opening tag and 3,000 spaces held the event loop ~14 s). Both functions are linear in the text.


def subagent_tag_in(text: str) -> str | None:
    """What the first `<CCM-SUBAGENT-MODEL>…</CCM-SUBAGENT-MODEL>` in `text` names, whitespace stripped; None when
    there is no closed tag."""
    start = text.find(SUBAGENT_OPEN)
    if start < 0:
        return None
    start += len(SUBAGENT_OPEN)
    end = text.find(SUBAGENT_CLOSE, start)
    return None if end < 0 else text[start:end].strip()


def without_subagent_tags(text: str) -> str:
    """`text` with every closed tag removed, and the whitespace after each."""
    kept: list[str] = []
    position = 0
    while (start := text.find(SUBAGENT_OPEN, position)) >= 0:
        end = text.find(SUBAGENT_CLOSE, start + len(SUBAGENT_OPEN))
        if end < 0:
            break
        kept.append(text[position:start])
        position = end + len(SUBAGENT_CLOSE)
        while position < len(text) and text[position].isspace():
            position += 1
    kept.append(text[position:])
    return "".join(kept)


def _texts(system: Any) -> list[str]:
    if isinstance(system, str):
        return [system]
    if isinstance(system, list):
        return [b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return []


def _budget_effort(budget: Any) -> EffortLevel:
    # Older clients ask for thinking with a token budget: Claude Code's "think" sent 4,000, "think hard" 10,000,
    # "ultrathink" 31,999.
    if not isinstance(budget, int) or budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    if budget < 31999:
        return "high"
    return "max"


def _has_image(blocks: Any) -> bool:
    if not isinstance(blocks, list):
        return False
    for block in blocks:
        if isinstance(block, dict):
            kind = block.get("type")
            if kind == "image" or (kind == "tool_result" and _has_image(block.get("content"))):
                return True
    return False


class RequestView:
    """The facts rules read from one request, each computed at most once and only when a rule asks for it."""

    def __init__(self, body: Mapping[str, Any], headers: Mapping[str, str], count_tokens: TokenCounter | None,
                 caller: Standing | None = None) -> None:
        self.body = body
        self.headers = headers
        self._count_tokens = count_tokens
        self.caller = caller or NOBODY

    @cached_property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else ""

    @cached_property
    def thinking(self) -> bool:
        thinking = self.body.get("thinking")
        return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")

    @cached_property
    def effort(self) -> EffortLevel | None:
        config = self.body.get("output_config")
        if isinstance(config, dict) and config.get("effort") in EFFORT_RANK:
            return config["effort"]  # type: ignore[no-any-return]
        thinking = self.body.get("thinking")
        if isinstance(thinking, dict):
            if thinking.get("type") == "enabled":
                return _budget_effort(thinking.get("budget_tokens"))
            if thinking.get("type") == "adaptive":
                return "high"  # Anthropic's default effort when none is given
        return None

    @cached_property
    def image(self) -> bool:
        messages = self.body.get("messages")
        if not isinstance(messages, list):
            return False
        return any(isinstance(m, dict) and _has_image(m.get("content")) for m in messages)

    @cached_property
    def web_search(self) -> bool:
        tools = self.body.get("tools")
        if not isinstance(tools, list):
            return False
        return any(
            isinstance(t, dict) and isinstance(t.get("type"), str) and t["type"].startswith("web_search") for t in tools
        )

    @cached_property
    def tool_names(self) -> tuple[str, ...]:
        tools = self.body.get("tools")
        if not isinstance(tools, list):
            return ()
        return tuple(t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str))

    @cached_property
    def system_texts(self) -> list[str]:
        return _texts(self.body.get("system"))

    @cached_property
    def subagent_tag(self) -> str | None:
        """The `provider/model` (or alias) named by a `<CCM-SUBAGENT-MODEL>` tag in the system prompt."""
        for text in self.system_texts:
            found = subagent_tag_in(text)
            if found is not None:
                return found
        return None

    @cached_property
    def subagent(self) -> bool:
        # Claude Code marks a subagent's request in the billing line, the first system block.
        texts = self.system_texts
        return bool(texts and SUBAGENT_MARKER in texts[0]) or self.subagent_tag is not None

    @cached_property
    def tokens(self) -> int:
        count = self._count_tokens
        if count is None:
            from ccm.tokens import count_request_tokens  # tiktoken loads only when a rule needs a count

            count = count_request_tokens
        return count(self.body)


# --- matchers compiled once per table ------------------------------------------------------------------------------

Matcher = Callable[[RequestView], bool]

_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _glob(pattern: str) -> Callable[[str], bool]:
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    compiled: Callable[[str], re.Match[str] | None] | None = None

    def match(value: str) -> bool:
        # compiled on first use: a table's router is built on every check and reload, most globs never run
        nonlocal compiled
        if compiled is None:
            compiled = re.compile(fnmatch.translate(pattern)).match
        return compiled(value) is not None

    return match


def _compare(op: Comparison, right: int) -> Callable[[int], bool]:
    compare = _COMPARE[op]
    return lambda left: compare(left, right)


NOBODY = Standing()  # a request without an issued key: `key`, `plan`, `team`, `budget` and `spent` do not hold
ZERO = Decimal(0)


def _compare_exact(op: Comparison, right: Decimal) -> Callable[[Decimal], bool]:
    return {"==": right.__eq__, "!=": right.__ne__, ">": right.__lt__, ">=": right.__le__,
            "<": right.__gt__, "<=": right.__ge__}[op]


def compile_condition(condition: Condition, table: RoutingTable, router: Router) -> Matcher:
    if isinstance(condition, Default):
        return lambda view: True
    if isinstance(condition, Direct):
        return lambda view: router.direct(view) is not None
    if isinstance(condition, Background):
        globs = [_glob(g) for g in table.settings.background]
        return lambda view: any(match(view.model) for match in globs)
    if isinstance(condition, Thinking):
        return lambda view: view.thinking
    if isinstance(condition, Effort):
        holds = _compare(condition.op, EFFORT_RANK[condition.level])
        return lambda view: view.effort is not None and holds(EFFORT_RANK[view.effort])
    if isinstance(condition, Tokens):
        holds = _compare(condition.op, condition.value)
        return lambda view: holds(view.tokens)
    if isinstance(condition, WebSearch):
        return lambda view: view.web_search
    if isinstance(condition, Image):
        return lambda view: view.image
    if isinstance(condition, Subagent):
        return lambda view: view.subagent
    if isinstance(condition, ModelName):
        match = _glob(condition.glob)
        return lambda view: bool(match(view.model))
    if isinstance(condition, Header):
        name = condition.name.lower()
        if condition.glob is None:
            return lambda view: name in view.headers
        match = _glob(condition.glob)
        return lambda view: name in view.headers and bool(match(view.headers[name]))
    if isinstance(condition, Tool):
        match = _glob(condition.glob)
        return lambda view: any(match(name) for name in view.tool_names)
    if isinstance(condition, CallerName):
        match = _glob(condition.glob)
        field = condition.field
        return lambda view: (value := getattr(view.caller, field)) is not None and bool(match(value))
    if isinstance(condition, Budget):
        holds_share = _compare_exact(condition.op, condition.percent)
        return lambda view: view.caller.budget_left is not None and holds_share(view.caller.budget_left)
    if isinstance(condition, Spent):
        holds_spend = _compare_exact(condition.op, condition.usd)
        period = condition.period
        return lambda view: view.caller.key is not None and holds_spend(dict(view.caller.spent).get(period, ZERO))
    if isinstance(condition, Not):
        inner = compile_condition(condition.operand, table, router)
        return lambda view: not inner(view)
    if isinstance(condition, All):
        parts = [compile_condition(c, table, router) for c in condition.operands]
        return lambda view: all(part(view) for part in parts)
    if isinstance(condition, AnyOf):
        parts = [compile_condition(c, table, router) for c in condition.operands]
        return lambda view: any(part(view) for part in parts)
    raise TypeError(f"unknown condition {condition!r}")


class PickCache:
    """What names a request's `model` (or subagent tag) resolved to, bounded: names come from clients, and a body may
    hold 32 MB of one. Only a name that can be a model is kept (at most `MAX_NAME` printable characters): anything
    longer or with control characters is resolved every time, a dictionary lookup or two. The cache holds at most
    `MAX_ENTRIES` names and `MAX_CHARS` characters of them, the oldest going first, so a flood of distinct names
    churns it without growing it and the names Claude Code repeats come back once the flood stops."""

    MAX_NAME = 256
    MAX_ENTRIES = 1024
    MAX_CHARS = 64 * 1024

    __slots__ = ("entries", "chars")

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Model, ...] | None] = {}
        self.chars = 0

    def put(self, name: str, chain: tuple[Model, ...] | None) -> None:
        if len(name) > self.MAX_NAME or not name.isprintable():
            return
        entries = self.entries
        while entries and (len(entries) >= self.MAX_ENTRIES or self.chars + len(name) > self.MAX_CHARS):
            self.chars -= len(oldest := next(iter(entries)))
            del entries[oldest]
        entries[name] = chain
        self.chars += len(name)


class Router:
    """What one table needs at request time, derived once: matchers, chains, and explicit-pick lookups."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self._chains = {name: self._chain_of(model, name) for name, model in table.models.items()}
        # `provider/model` picks that name an alias's upstream: served by that upstream alone, with the alias's
        # options (caps, quirks) and its fallbacks. A model balanced over several deployments can be pinned to any.
        self._pinned: dict[tuple[str, str], tuple[Model, ...]] = {}
        for name, model in table.models.items():
            if not model.declared:
                continue
            upstreams = [(d.provider, d.model) for d in model.deployments] or [(model.provider, model.model)]
            for provider, model_id in upstreams:
                pinned = model
                if model.deployments:
                    pinned = model.model_copy(update={"provider": provider, "model": model_id, "deployments": ()})
                self._pinned.setdefault((provider, model_id), (pinned, *self._chains[name][1:]))
        self._picks = PickCache()
        self.matchers = [compile_condition(rule.condition, table, self) for rule in table.rules]
        # What a decision says about its rule (`direct` adds which name picked the target), written once per table:
        # only `explain` reads it, the server passes it along on every request.
        self.reasons = [
            f"rule {index + 1} `{rule.source}`" + (f" ({rule.span})" if rule.span else "")
            for index, rule in enumerate(table.rules)
        ]

    def _chain_of(self, model: Model, name: str) -> tuple[Model, ...]:
        chain = [model]
        for fallback in self.table.fallbacks.get(name, ()):
            candidate = self.table.models[fallback]
            if all(candidate is not m for m in chain):
                chain.append(candidate)
        return tuple(chain)

    def chain(self, name: str) -> tuple[Model, ...]:
        return self._chains[name]

    def pick(self, name: str) -> tuple[Model, ...] | None:
        """The chain for a model a request names itself, or None. Cached: Claude Code repeats the same names."""
        picks = self._picks
        if name in picks.entries:
            return picks.entries[name]
        found = self._resolve_pick(name)
        picks.put(name, found)
        return found

    def _resolve_pick(self, name: str) -> tuple[Model, ...] | None:
        table = self.table
        if name in table.models and table.models[name].declared:
            return self._chains[name]
        for separator in ("/", ","):
            provider, sep, model_id = name.partition(separator)
            if sep and model_id and provider in table.providers:
                pinned = self._pinned.get((provider, model_id))
                if pinned is not None:
                    return pinned
                literal = f"{provider}/{model_id}"
                if literal in table.models:
                    return self._chains[literal]
                return (Model(name=literal, provider=provider, model=model_id, declared=False),)
        return None

    def direct(self, view: RequestView) -> tuple[tuple[Model, ...], bool] | None:
        """The chain a request names itself, and whether its `<CCM-SUBAGENT-MODEL>` tag named it (the tag wins over
        `model`); None when it names nothing routable."""
        tag = view.subagent_tag
        if tag is not None:
            picked = self.pick(tag)
            if picked is not None:
                return picked, True
        picked = self.pick(view.model)
        return None if picked is None else (picked, False)


def router_for(table: RoutingTable) -> Router:
    # Read from pydantic's dict of private values: `table._router` reaches it through BaseModel.__getattr__ after a
    # failed lookup, ~3 µs, a fifth of a whole select_route.
    router = table.__pydantic_private__["_router"]  # type: ignore[index]  # always a dict on a built table
    if router is None or router.table is not table:  # model_copy() copies private attributes: rebuild for the copy
        router = table._router = Router(table)
    return router  # type: ignore[no-any-return]


def select_route(
    table: RoutingTable,
    request: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    count_tokens: TokenCounter | None = None,
    caller: Standing | None = None,
) -> Decision:
    router = router_for(table)
    view = RequestView(request, headers or {}, count_tokens, caller)
    for index, (rule, matches) in enumerate(zip(table.rules, router.matchers, strict=True)):
        if not matches(view):
            continue
        if rule.target is None:
            direct = router.direct(view)
            assert direct is not None  # the matcher just found it
            chain, tagged = direct
            how = f"<CCM-SUBAGENT-MODEL> tag names {view.subagent_tag!r}" if tagged else f"request names {view.model!r}"
            return Decision(chain, rule, index, f"{router.reasons[index]}: {how}", view.subagent_tag is not None)
        return Decision(router.chain(rule.target), rule, index, router.reasons[index], view.subagent_tag is not None)
    raise NoRouteError("no rule matched and the table has no default rule")


def strip_subagent_tag(body: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of the body whose system prompt no longer carries the `<CCM-SUBAGENT-MODEL>` tag."""
    system = body.get("system")
    stripped: Any = system
    if isinstance(system, str):
        stripped = without_subagent_tags(system)
    elif isinstance(system, list):
        stripped = [
            {**b, "text": without_subagent_tags(b["text"])}
            if isinstance(b, dict) and isinstance(b.get("text"), str) and SUBAGENT_OPEN in b["text"]
            else b
            for b in system
        ]
    return {**body, "system": stripped}
