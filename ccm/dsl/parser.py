"""Parse route-file text into a `SourceFile` syntax tree, or raise `RouteSyntaxError` with a friendly diagnostic.

The Lark parser (LALR, contextual lexer) is built once per process, and builds the syntax nodes itself as it reduces
each rule, spans included: no lark tree, no second pass (a 2,000-rule file parses in ~0.15 s; `ccm.dsl.fast_reduce`
says how, and which private lark API that takes). Comments never reach
the parser: the post-lexer takes them out of the token stream and keeps them beside the tree for `ccm fmt`, and it folds
runs of newlines into one `_NL` so the grammar only ever sees single line breaks.

Syntax errors name what was found and what would have fitted, in words, and a few common mistakes get their own
message (labelled bad examples, matched by parser state as lark's `match_examples` does). Lark's own
exceptions never leave this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from functools import lru_cache
from importlib import resources
from operator import attrgetter
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from ccm.diagnostics import Diagnostic, SourceLines, did_you_mean
from ccm.dsl import syntax as s
from ccm.dsl.fast_reduce import Build, FastReduceLark, Point
from ccm.frozen import frozen


def _grammar() -> str:
    """grammar/routes.lark: read from the checkout when running from one (tests, editable installs), else from the
    `ccm.grammar` package data a wheel installs."""
    checkout = Path(__file__).resolve().parents[2] / "grammar" / "routes.lark"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    return (resources.files("ccm.grammar") / "routes.lark").read_text(encoding="utf-8")


class RouteSyntaxError(Exception):
    """The text is not a route file. Carries the diagnostic to show (never a lark traceback)."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


# --- per-parse state -----------------------------------------------------------------------------------------------


class _Build:
    """One method per grammar rule, each turning a rule's children into a node of `ccm.dsl.syntax`. The parser calls
    them as it reduces, so no lark tree is built. One instance per parse: the file name for spans, the text for the
    escape diagnostic, the comments the post-lexer set aside, and the first bad escape (reported only when the whole
    file parses, so a syntax error anywhere still wins, as it would if the tree were built first)."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.comments: list[Token] = []
        self.bad_escape: Diagnostic | None = None

    # helpers
    def _tspan(self, token: Token) -> s.Span:
        return s.Span(self.file, token.line or 1, token.column or 1, token.end_line or 1, token.end_column or 1)

    def leaf(self, node: Any) -> Any:
        if not isinstance(node, Token):
            return node
        span = self._tspan(node)
        if node.type == "STRING":
            return s.Str(self._decode(node), str(node), span)
        if node.type == "NUMBER":
            number = float(node) if any(c in node for c in ".eE") else int(node)
            return s.Scalar(number, str(node), span)
        if node.type in _SCALARS:
            return s.Scalar(_SCALARS[node.type], str(node), span)
        return s.Word(str(node), span)

    def _decode(self, token: Token) -> str:
        if "\\" not in token:  # nothing to unescape (the lexer admits no bare quote or line break)
            return token[1:-1]
        try:
            value = json.loads(token, strict=False)
        except json.JSONDecodeError:
            if self.bad_escape is None:
                self.bad_escape = SourceLines({self.file: self.text}).diagnostic(
                    "error", self.file, token.line or 1, token.column or 1, "invalid escape in string",
                    'strings use JSON escapes: \\" \\\\ \\n \\t \\uXXXX',
                )
            return str(token)
        assert isinstance(value, str)
        return value

    def _leaves(self, children: list[Any]) -> tuple[Any, ...]:
        return tuple(self.leaf(c) for c in children)

    # file and statements
    def start(self, children: list[Any], span: s.Span) -> tuple[s.Statement, ...]:
        return tuple(children)

    def include(self, children: list[Any], span: s.Span) -> s.Include:
        return s.Include(self.leaf(children[1]), span)

    def settings(self, children: list[Any], span: s.Span) -> s.Block:
        return s.Block(self.leaf(children[0]), None, tuple(children[1:]), span)

    def provider(self, children: list[Any], span: s.Span) -> s.Block:
        keyword, name, *items = children
        return s.Block(self.leaf(keyword), self.leaf(name), tuple(items), span)

    test = policy = provider

    def model(self, children: list[Any], span: s.Span) -> s.ModelDecl:
        name = self.leaf(children[1])
        deployments = tuple(c for c in children[3:] if isinstance(c, s.Deployment))
        block = children[-1] if isinstance(children[-1], _Part) else None
        items, block_span = (block.value, block.span) if block else (None, None)
        return s.ModelDecl(name, deployments, items, span, block_span)

    def deployment(self, children: list[Any], span: s.Span) -> s.Deployment:
        weight = self.leaf(children[2]) if len(children) > 2 else None
        return s.Deployment(self.leaf(children[0]), weight, span)

    def model_block(self, children: list[Any], span: s.Span) -> _Part:
        return _Part("block", tuple(children), span)

    def retry(self, children: list[Any], span: s.Span) -> s.Retry:
        keyword, attempts, *rest = children
        backoff = next((c for c in rest if isinstance(c, s.Range)), None)
        on = next((c.value for c in rest if isinstance(c, _Part)), None)
        return s.Retry(self.leaf(keyword), self.leaf(attempts), backoff, on, span)

    def breaker(self, children: list[Any], span: s.Span) -> s.Breaker:
        keyword, *rest = children
        setting = self.leaf(rest[0]) if isinstance(rest[0], Token) else None
        failures = next((c.value for c in rest if isinstance(c, _Part) and c.kind == "failures"), None)
        cooldown = next((c.value for c in rest if isinstance(c, _Part) and c.kind == "cooldown"), None)
        return s.Breaker(self.leaf(keyword), setting, failures, cooldown, span)

    def breaker_failures(self, children: list[Any], span: s.Span) -> _Part:
        return _Part("failures", self.leaf(children[0]), span)

    def breaker_cooldown(self, children: list[Any], span: s.Span) -> _Part:
        if len(children) == 2:
            return _Part("cooldown", self.leaf(children[1]), span)
        return _Part("cooldown", s.Range(self.leaf(children[1]), self.leaf(children[2]), span), span)

    def backoff(self, children: list[Any], span: s.Span) -> s.Range:
        return s.Range(self.leaf(children[1]), self.leaf(children[2]), span)

    def retry_on(self, children: list[Any], span: s.Span) -> _Part:
        return _Part("on", self._leaves(children[1:]), span)

    def route(self, children: list[Any], span: s.Span) -> s.RouteBlock:
        return s.RouteBlock(tuple(children[1:]), span)

    def fallback(self, children: list[Any], span: s.Span) -> s.Fallback:
        chain = tuple(c for c in children[1:] if isinstance(c, s.Word))
        return s.Fallback(chain, span)

    # rules and conditions
    def rule(self, children: list[Any], span: s.Span) -> s.RouteRule:
        return s.RouteRule(None, self.leaf(children[0]), children[2], span)

    def direct_rule(self, children: list[Any], span: s.Span) -> s.RouteRule:
        return s.RouteRule(self.leaf(children[0]), None, None, span)

    def default_rule(self, children: list[Any], span: s.Span) -> s.RouteRule:
        return s.RouteRule(self.leaf(children[0]), None, children[2], span)

    def target(self, children: list[Any], span: s.Span) -> s.Word:
        word = self.leaf(children[0])
        assert isinstance(word, s.Word)
        return word

    def or_condition(self, children: list[Any], span: s.Span) -> s.Or:
        return s.Or(tuple(self.leaf(c) for c in children[::2]), span)

    def and_condition(self, children: list[Any], span: s.Span) -> s.And:
        return s.And(tuple(self.leaf(c) for c in children[::2]), span)

    def not_condition(self, children: list[Any], span: s.Span) -> s.Not:
        return s.Not(self.leaf(children[1]), span)

    def paren(self, children: list[Any], span: s.Span) -> s.Paren:
        return s.Paren(self.leaf(children[0]), span)

    def flag(self, children: list[Any], span: s.Span) -> s.Atom:
        return s.Atom(self.leaf(children[0]), (), span)

    def atom(self, children: list[Any], span: s.Span) -> s.Atom:
        keyword, *args = self._leaves(children)
        return s.Atom(keyword, tuple(args), span)

    tokens = effort = model_name = header = tool = caller = budget = spent = atom

    # values
    def env(self, children: list[Any], span: s.Span) -> s.Env:
        name = self.leaf(children[1])
        default = self.leaf(children[2]) if len(children) > 2 else None
        return s.Env(name, default, span)

    def file_value(self, children: list[Any], span: s.Span) -> s.FileRef:
        return s.FileRef(self.leaf(children[1]), span)

    def object(self, children: list[Any], span: s.Span) -> s.Object:
        return s.Object(tuple(children), span)

    def member(self, children: list[Any], span: s.Span) -> s.Member:
        key, separator, value = children
        return s.Member(self.leaf(key), str(separator), self.leaf(value), span)

    def array(self, children: list[Any], span: s.Span) -> s.Array:
        return s.Array(self._leaves(children), span)

    # every block item (`context 128k`, `timeout connect 5s idle 30s`, `request file "x.json"`, …)
    def item(self, children: list[Any], span: s.Span) -> s.Item:
        keyword, *args = self._leaves(children)
        return s.Item(keyword, tuple(args), span)


_building: ContextVar[_Build] = ContextVar("ccm_building")

_SCALARS = {"TRUE": True, "FALSE": False, "NULL": None}


@frozen
class _Part:
    """A piece of a bigger node, with its span: a model's `{ … }`, a retry's `on …`, a breaker's `5 failures` or
    `cooldown 10s..2m`."""

    kind: str
    value: Any
    span: s.Span


# --- lexing --------------------------------------------------------------------------------------------------------


# How deeply conditions, blocks, objects and arrays may nest. The parser itself is iterative, but what reads the tree
# recurses (the compiler, the printer, pydantic's validation of the table, the router's matchers at request time):
# a cap here, with a diagnostic, keeps a hostile file from ending anywhere in a RecursionError. Each level costs the
# deepest reader a few frames of Python's 1,000; no real file comes near 64.
MAX_NESTING = 64
_OPENERS = frozenset({"LPAR", "LBRACE", "LSQB"})
_CLOSERS = frozenset({"RPAR", "RBRACE", "RSQB"})


class _Layout:
    """Post-lexer: keep comments aside, fold blank and comment-only lines into one `_NL`, drop leading newlines, and
    refuse nesting deeper than `MAX_NESTING`: an open bracket is a level until it closes, a `not` until its operand
    starts (then that operand's own brackets count)."""

    always_accept = ("COMMENT", "_NL")

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        state = _building.get()
        sink = state.comments
        at_line_start = True
        depth = 0
        nots = [0]  # per open bracket, the `not`s written in it whose operand has not started yet
        for token in stream:
            kind = token.type
            if kind == "COMMENT":
                sink.append(token)
                continue
            if kind == "_NL":
                if not at_line_start:
                    at_line_start = True
                    yield token
                continue
            at_line_start = False
            if kind in _OPENERS or kind == "NOT":
                depth += 1
                if depth > MAX_NESTING:
                    raise RouteSyntaxError(_too_deep(state, token))
                if kind == "NOT":
                    nots[-1] += 1
                else:
                    nots.append(0)
            elif kind in _CLOSERS:
                if len(nots) > 1:
                    depth -= 1 + nots.pop()
                depth -= nots[-1]  # the bracket just closed was the operand of these
                nots[-1] = 0
            elif nots[-1]:
                depth -= nots[-1]
                nots[-1] = 0
            yield token


def _too_deep(state: _Build, token: Token) -> Diagnostic:
    line, column = token.line or 1, token.column or 1
    return SourceLines({state.file: state.text}).diagnostic(
        "error", state.file, line, column, f"nested too deeply (limit {MAX_NESTING})",
        f"conditions, blocks, objects and arrays nest at most {MAX_NESTING} levels", line, column + len(token),
    )


# --- reducing: each rule's node built as the parser reduces it (ccm.dsl.fast_reduce) ---------------------------


def _node_factory(name: str) -> Build:
    """The builder of one rule's node: its `_Build` method (`_Build.item` for every block item), given the parse's
    state and the node's span."""
    method: Callable[[_Build, list[Any], s.Span], Any] = getattr(_Build, name, _Build.item)

    def build(children: list[Any], start: Point | None, end: Point | None) -> Any:
        state = _building.get()
        (line, column), (end_line, end_column) = start or (1, 1), end or (1, 1)  # nothing written: an empty file
        return method(state, children, s.Span(state.file, line, column, end_line, end_column))

    return build


def _analysis_cache() -> str | bool:
    """Where lark keeps its analysed grammar (5x faster start: `ccm run` and `ccm check` build the parser every time).
    The user's own cache folder rather than the shared temp dir, since lark stores it as a pickle; lark checks the
    grammar's hash before using it."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ccm"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return str(folder / f"routes-lark-{lark.__version__}.cache")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return FastReduceLark(
        _grammar(),
        node_factory=_node_factory,
        located=attrgetter("span"),
        parser="lalr",
        lexer="contextual",
        postlex=_Layout(),
        maybe_placeholders=False,
        cache=_analysis_cache(),
    )


def _reduce_all(text: str, file: str) -> tuple[tuple[s.Statement, ...], _Build]:
    """Parse `text` into statements (lark's `UnexpectedInput` passes through), with the parse's state."""
    build = _Build(file, text)
    reset = _building.set(build)
    try:
        statements: tuple[s.Statement, ...] = _parser().parse(text)  # type: ignore[assignment]  # the `start` node
    finally:
        _building.reset(reset)
    return statements, build


# --- errors in words -----------------------------------------------------------------------------------------------

_CATEGORY = {
    "NAME": "a name",
    "MODELPATH": "a provider/model",
    "STRING": 'a "string"',
    "QUANTITY": "a number",
    "MONEY": "an amount in dollars ($20)",
    "NUMBER": "a number",
    "COMPARE": "a comparison (== != > >= < <=)",
    "_NL": "a new line",
    "$END": "the end of the file",
    "FAILURES": "`failures`",
}

# Common mistakes, recognised by the parser state they leave.
_EXAMPLES: dict[str, list[str]] = {
    "a rule is `condition -> target`: the `->` is missing": [
        "route {\n websearch opus\n}",
        "route {\n websearch p/x\n}",
        "route {\n default opus\n}",
        "route {\n tokens > 100k opus\n}",
        "route {\n model ~ \"x\" opus\n}",
    ],
    "a rule needs a target after `->`": ["route {\n websearch ->\n}", "route {\n default ->\n}"],
    "a model is declared as `model NAME = provider/model`": ["model a = b", "model a = b c", "model a b/c"],
    "`tokens` and `effort` need a comparison, as in `tokens > 100k` or `effort >= high`": [
        "route {\n tokens 100k -> a\n}",
        "route {\n effort high -> a\n}",
    ],
    "`model` in a condition needs `~ \"glob\"` or `== \"name\"`": ["route {\n model \"x\" -> a\n}"],
    "a fallback chain is `fallback NAME -> NAME …`": ["fallback a b", "fallback a"],
    "deployments are separated by commas: `model NAME = a/model weight 3, b/model weight 1`": [
        "model a = p/m q/m",
        "model a = p/m weight 3 q/m",
    ],
    "`weight` needs a whole number, as in `deepseek/deepseek-chat weight 3`": [
        "model a = p/m weight\n",
        "model a = p/m weight x",
    ],
    "a breaker is `breaker N failures cooldown MIN..MAX`, `breaker cooldown MIN..MAX` or `breaker off`": [
        "breaker 5\n",
        "breaker 5 x",
        "breaker\n",
        "provider p {\n breaker\n}",
    ],
}


def _state_of(error: UnexpectedInput) -> int | None:
    state = getattr(error, "state", None)
    position = getattr(state, "position", None)
    return position if isinstance(position, int) else None


@lru_cache(maxsize=1)
def _example_states() -> dict[int, str]:
    """LALR state → label, from the examples. Matching on the state alone (not lark's whole-stack comparison)
    recognises a mistake wherever in the file it is made."""
    states: dict[int, str] = {}
    for label, examples in _EXAMPLES.items():
        for example in examples:
            try:
                _reduce_all(example, "<example>")
            except UnexpectedInput as error:
                position = _state_of(error)
                if position is not None:
                    states.setdefault(position, label)
    return states


def _describe(terminal: str) -> str:
    if terminal in _CATEGORY:
        return _CATEGORY[terminal]
    pattern = _parser().get_terminal(terminal).pattern
    return f"`{pattern.value}`" if isinstance(pattern, PatternStr) else terminal.lower()


def _keyword_values(terminals: set[str]) -> list[str]:
    values = []
    for name in terminals:
        if name in _CATEGORY:
            continue
        pattern = _parser().get_terminal(name).pattern
        if isinstance(pattern, PatternStr) and pattern.value.isidentifier():
            values.append(pattern.value)
    return values


def _expected(terminals: set[str]) -> str:
    words = sorted({_describe(t) for t in terminals if t != "COMMENT"}, key=lambda w: (not w.startswith("`"), w))
    return "expected " + (words[0] if len(words) == 1 else "one of " + ", ".join(words))


def _found(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    if token.type == "$END":
        return "end of file"
    return f"`{token}`"


def _acceptable(error: UnexpectedInput) -> set[str]:
    """What the parser would have taken here: exact when lark can replay the state, else the lexer's guess."""
    interactive = getattr(error, "interactive_parser", None)
    if interactive is not None:
        return set(interactive.accepts())
    return set(getattr(error, "expected", None) or getattr(error, "allowed", None) or ()) - {"COMMENT"}


# The keywords that start a top-level statement: one of them at the start of a line inside a block means the block
# before it was never closed.
_STATEMENTS = frozenset({"INCLUDE", "SETTINGS", "PLAN", "TEAM", "PROVIDER", "MODEL", "ROUTE", "FALLBACK", "RETRY",
                         "BREAKER", "TEST"})


def _unclosed_brace(text: str, before_line: int) -> tuple[int, int] | None:
    """Line and column (1-based) of the innermost `{` still open when line `before_line` starts (strings and
    comments skipped), or None."""
    open_braces: list[tuple[int, int]] = []
    for number, line in enumerate(text.splitlines()[: before_line - 1], start=1):
        in_string = escaped = False
        for index, char in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "#":
                break
            elif char == "{":
                open_braces.append((number, index + 1))
            elif char == "}" and open_braces:
                open_braces.pop()
    return open_braces[-1] if open_braces else None


def _syntax_diagnostic(error: UnexpectedInput, text: str, file: str) -> Diagnostic:
    lines = SourceLines({file: text})
    expected = _acceptable(error)
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        char = text[position] if position < len(text) else ""
        if char == '"':
            return lines.diagnostic("error", file, error.line, error.column, "unterminated string",
                                    "a string ends with `\"` on the same line")
        advice = "strings use double quotes" if char == "'" else _expected(expected)
        return lines.diagnostic("error", file, error.line, error.column, f"unexpected character `{char}`", advice,
                                error.line, error.column + 1)
    if isinstance(error, UnexpectedEOF) or (isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        last = text.rstrip().splitlines() or [""]
        line, column = len(last), len(last[-1]) + 1
        opened = _unclosed_brace(text, len(last) + 1) if "RBRACE" in expected else None
        if opened is not None:
            open_line, open_column = opened
            header = (lines.line(file, open_line) or "").strip().removesuffix("{").strip()
            return lines.diagnostic("error", file, open_line, open_column, f"`{header}` has no closing `}}`",
                                    "close it: the file ends inside it", open_line, open_column + 1)
        message = "unexpected end of file: a `{` is not closed" if "RBRACE" in expected else "unexpected end of file"
        return lines.diagnostic("error", file, line, column, message, _expected(expected) if expected else None,
                                line, column + 1)
    assert isinstance(error, UnexpectedToken)
    token = error.token
    line, column = token.line or 1, token.column or 1
    if token.type in _STATEMENTS and column == 1 and "RBRACE" in expected:
        opened = _unclosed_brace(text, line)
        if opened is not None:  # a statement where the block's `}` belongs: the block was left open
            open_line, open_column = opened
            header = (lines.line(file, open_line) or "").strip().removesuffix("{").strip()
            return lines.diagnostic("error", file, open_line, open_column, f"`{header}` has no closing `}}`",
                                    f"close it before line {line}, where `{token}` starts a new statement",
                                    open_line, open_column + 1)
    state = _state_of(error)
    label = _example_states().get(state) if state is not None else None
    message = label or f"unexpected {_found(token)}"
    # a keyword of the language is not a misspelling of another (`test` is not a mistyped `tokens`)
    guess = str(token).isidentifier() and token.type not in _STATEMENTS
    hint: str | None = did_you_mean(str(token), _keyword_values(expected)) if guess else None
    if hint is None and expected:
        hint = _expected(expected)
    end_column = column + (1 if token.type == "_NL" else len(str(token)))
    return lines.diagnostic("error", file, line, column, message, hint, line, end_column)


def parse(text: str, file: str) -> s.SourceFile:
    """Parse `text` (the contents of `file`, which names it in spans and diagnostics)."""
    try:
        statements, build = _reduce_all(text, file)
    except UnexpectedInput as error:
        raise RouteSyntaxError(_syntax_diagnostic(error, text, file)) from None
    if build.bad_escape is not None:
        raise RouteSyntaxError(build.bad_escape)
    notes = tuple(s.Comment(str(c).rstrip(), build._tspan(c)) for c in build.comments)
    return s.SourceFile(file, text, statements, notes)
