"""Lark's LALR parser building the caller's nodes as it reduces each rule: no lark tree, no second pass.

    FastReduceLark(grammar, node_factory=…, **lark_options)

`node_factory(name)` is asked once per grammar rule (by its alias, template or rule name, as lark names a
transformer's method) for the function that builds that rule's node: `build(children, start, end)`, where
`children` are what lark's tree builder would keep (named tokens and nodes, the children of inlined `_rules`, a
`?rule` with one child collapsed to it) and `start`, `end` are the `(line, column)` of the node's first written
thing and the end of its last, braces and other anonymous tokens included, as `propagate_positions=True` gives
(1-based, end exclusive; None for a node with nothing written, like the start of an empty file). `located(node)` reads a
built node's position back, for the spans of its parents: any object with `line`, `column`, `end_line` and `end_column`
(None when the node holds nothing written). Lark's own `transformer=` option would build nodes as it parses too, but
hands a callback only the tokens the grammar keeps (a node could not span its braces), and `v_args(meta=True)` means
building the tree and then a second pass, which cost more than lexing and parsing together on a 2,000-rule file.

Iterative and linear: an inlined rule (the repetition lark generates for `(…)*`, left-recursive in LALR) hands its
parent its children and the positions of its first and last written things, computed as it is reduced, so nothing
walks back down a chain of them, and a left-recursive repetition appends to one list instead of copying it at every
step (as lark's `ChildFilterLALR` does). A 10,000-statement file is one list, not 10,000 nested ones.

Private lark API this relies on (lark 1.3.x; pyproject pins `lark>=1.3.1,<1.4`):

- `Lark._prepare_callbacks()`, called by `Lark.__init__` and by loading a cached parser, which must set
  `self._callbacks` to a dict `Rule -> callable(list of matched values) -> value`;
- `lark.grammar.Rule`'s `origin.name`, `alias`, `expansion` (symbols with `is_term`, `name` and, for terminals,
  `filter_out`) and `options.keep_all_tokens`, `options.expand1`, `options.template_source`;
- what `lark.parse_tree_builder` does with them (which children it keeps, inlines and collapses).

tests/lang/test_fast_reduce.py builds lark trees through this module and compares them, spans included, with lark's
own `propagate_positions=True` trees on every golden file and example, so a lark upgrade that changes any of it
fails there rather than silently shifting carets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from lark import Lark, Token
from lark.grammar import Rule, Terminal

Point = tuple[int, int]  # line, column


class Position(Protocol):
    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...
    @property
    def end_line(self) -> int: ...
    @property
    def end_column(self) -> int: ...


Build = Callable[[list[Any], "Point | None", "Point | None"], Any]
NodeFactory = Callable[[str], Build]
Located = Callable[[Any], Position | None]


class Inlined:
    """What an inlined `_rule` reduces to: its children for the parent, and where its first written thing starts
    and its last ends (None when it holds nothing written, like an empty repetition)."""

    __slots__ = ("children", "first", "last")

    def __init__(self, children: list[Any], first: Point | None, last: Point | None) -> None:
        self.children = children
        self.first = first
        self.last = last


def _first(parts: list[Any], located: Located) -> Point | None:
    for part in parts:
        if isinstance(part, Token):
            return part.line or 1, part.column or 1
        if isinstance(part, Inlined):
            if part.first is not None:
                return part.first
            continue
        position = located(part)
        if position is not None:
            return position.line, position.column
    return None


def _last(parts: list[Any], located: Located) -> Point | None:
    for part in reversed(parts):
        if isinstance(part, Token):
            return part.end_line or 1, part.end_column or 1
        if isinstance(part, Inlined):
            if part.last is not None:
                return part.last
            continue
        position = located(part)
        if position is not None:
            return position.end_line, position.end_column
    return None


def rule_name(rule: Rule) -> str:
    """The name lark gives a rule's callback: its alias (`-> name`), its template, or the rule itself."""
    return str(rule.alias or rule.options.template_source or rule.origin.name)


def reducer(rule: Rule, build: Build, located: Located) -> Callable[[list[Any]], Any]:
    """The callback for one grammar rule."""
    keep = [
        (index, not symbol.is_term and symbol.name.startswith("_"))
        for index, symbol in enumerate(rule.expansion)
        if rule.options.keep_all_tokens or not (isinstance(symbol, Terminal) and symbol.filter_out)
    ]
    kept = [index for index, _ in keep]
    expands = any(expand for _, expand in keep)
    filtered = len(keep) < len(rule.expansion)
    inline = rule.origin.name.startswith("_")
    collapse = rule.options.expand1 and not rule.alias

    def reduce(parts: list[Any]) -> Any:
        if expands:
            children: list[Any] = []
            for index, expand in keep:
                if not expand:
                    children.append(parts[index])
                elif children:
                    children.extend(parts[index].children)
                else:  # left recursion: take over the inlined rule's list (each value is reduced into one parent)
                    children = parts[index].children
        elif filtered:
            children = [parts[index] for index in kept]
        else:
            children = parts
        if inline:
            return Inlined(children, _first(parts, located), _last(parts, located))
        if collapse and len(children) == 1:
            return children[0]
        return build(children, _first(parts, located), _last(parts, located))

    return reduce


class FastReduceLark(Lark):
    """Lark whose LALR callbacks are `reducer`s over the builders `node_factory` hands out."""

    def __init__(self, grammar: str, *, node_factory: NodeFactory, located: Located, **options: Any) -> None:
        self._node_factory = node_factory
        self._located = located
        super().__init__(grammar, **options)

    def _prepare_callbacks(self) -> None:
        self._callbacks = {
            rule: reducer(rule, self._node_factory(rule_name(rule)), self._located) for rule in self.rules
        }
