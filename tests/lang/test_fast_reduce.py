"""ccm's fast path through lark's private `_prepare_callbacks` (ccm/dsl/fast_reduce.py) against lark's own tree.

The fast path builds ccm's nodes as the parser reduces, imitating lark's tree builder: which children a rule keeps,
inlines and collapses, and the spans `propagate_positions=True` gives. Here it builds lark trees instead, through the
same reducers, and every golden file and example must come out identical to what lark itself builds, tokens and
spans included. A lark upgrade that changes its callbacks, its rule objects or its tree shaping fails here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from ccm.dsl import fast_reduce
from ccm.dsl.parser import _Build, _building, _grammar, _Layout

REPO = Path(__file__).resolve().parents[2]
FILES = sorted(
    [*(REPO / "tests" / "lang" / "golden").rglob("*.ccm"), *(REPO / "examples").glob("*.ccm"), REPO / "routes.ccm"]
)
SHAPES = [
    "",
    "\n\n# only a comment\n",
    "route {\n  (websearch or (not image and tokens > 1k)) -> a\n  not not thinking -> p/m\n  default -> a\n}\n",
    'test "t" {\n  request { a: [1, {b = [], c: {}}], "d": env("X", "y") }\n  expect a\n}\n',
    "model a = p/m weight 3,\n  q/m { context 1k }\n" * 3,
    "retry 3 backoff 1s..2s on 429 timeout\nbreaker 5 failures cooldown 1s..2s\nbreaker off\n",
]


def _tree_factory(name: str) -> fast_reduce.Build:
    def build(children: list[Any], start: fast_reduce.Point | None, end: fast_reduce.Point | None) -> Tree[Any]:
        tree = Tree(name, children)
        meta = tree.meta  # lark's Meta starts empty
        if start is not None and end is not None:
            meta.line, meta.column = start
            meta.end_line, meta.end_column = end
            meta.empty = False
        return tree

    return build


def _located(node: Any) -> Any:
    return node.meta if isinstance(node, Tree) and not node.meta.empty else None


OPTIONS: dict[str, Any] = {"parser": "lalr", "lexer": "contextual", "postlex": _Layout(), "maybe_placeholders": False}
FAST = fast_reduce.FastReduceLark(_grammar(), node_factory=_tree_factory, located=_located, **OPTIONS)
LARK = Lark(_grammar(), propagate_positions=True, **OPTIONS)


def _parse(parser: Lark, text: str) -> Any:
    reset = _building.set(_Build("x.ccm", text))  # the post-lexer sets comments aside on the parse's state
    try:
        return parser.parse(text)
    finally:
        _building.reset(reset)


def _flatten(node: Any) -> Iterator[tuple[Any, ...]]:
    """Every node and token, in order, with its name and position (iteratively: deep trees are tested too)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Tree):
            meta = current.meta
            where = None if meta.empty else (meta.line, meta.column, meta.end_line, meta.end_column)
            yield "tree", current.data, len(current.children), where
            stack.extend(reversed(current.children))
        elif isinstance(current, Token):
            yield ("token", current.type, str(current), current.line, current.column, current.end_line,
                   current.end_column)
        else:
            yield "value", current


def _outcome(parse: Callable[[], Any]) -> list[tuple[Any, ...]]:
    try:
        result = parse()
    except UnexpectedInput as error:
        return [("error", type(error).__name__, error.line, error.column)]
    if isinstance(result, Tree):
        return list(_flatten(result))
    return list(_flatten(Tree("start", list(result))))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_fast_path_spans_equal_larks_on_every_golden_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    expected = _outcome(lambda: _parse(LARK, text))
    assert _outcome(lambda: _parse(FAST, text)) == expected
    assert any(entry[0] == "tree" for entry in expected) or expected[0][0] == "error"


@pytest.mark.parametrize("text", SHAPES)
def test_fast_path_spans_equal_larks_on_every_shape(text: str) -> None:
    assert _outcome(lambda: _parse(FAST, text)) == _outcome(lambda: _parse(LARK, text))


def test_the_check_compares_something() -> None:
    """The comparison would notice a span off by one (a fast path that only looked right would pass vacuously)."""
    text = SHAPES[2]
    fast = _outcome(lambda: _parse(FAST, text))
    shifted = [(*entry[:3], (entry[3][0], entry[3][1] + 1, *entry[3][2:])) if entry[0] == "tree" and entry[3]
               else entry for entry in fast]
    assert shifted != _outcome(lambda: _parse(LARK, text))


def test_a_long_file_is_one_list_not_a_nested_chain() -> None:
    """10,000 top-level statements: lark's tree and the fast path's agree, and nothing recursed on the way."""
    text = "fallback a -> b\n" * 10_000
    assert _outcome(lambda: _parse(FAST, text)) == _outcome(lambda: _parse(LARK, text))
