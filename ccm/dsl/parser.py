"""Parse route-file text into a `SourceFile` syntax tree, or raise `RouteSyntaxError` with a friendly diagnostic.

The Lark parser (LALR, contextual lexer, positions propagated) is built once per process. Comments never reach the
parser: the post-lexer takes them out of the token stream and keeps them beside the tree for `ccm fmt`, and it folds
runs of newlines into one `_NL` so the grammar only ever sees single line breaks.

Syntax errors name what was found and what would have fitted, in words, and a few common mistakes get their own
message (labelled bad examples, matched by parser state as lark's `match_examples` does). Lark's own
exceptions never leave this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextvars import ContextVar
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr
from lark.tree import Meta

from ccm.diagnostics import Diagnostic, SourceLines, did_you_mean
from ccm.dsl import syntax as s



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


# --- lexing --------------------------------------------------------------------------------------------------------

_comments: ContextVar[list[Token] | None] = ContextVar("ccm_comments", default=None)


class _Layout:
    """Post-lexer: keep comments aside, fold blank and comment-only lines into one `_NL`, drop leading newlines."""

    always_accept = ("COMMENT", "_NL")

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        sink = _comments.get()
        at_line_start = True
        for token in stream:
            if token.type == "COMMENT":
                if sink is not None:
                    sink.append(token)
            elif token.type == "_NL":
                if not at_line_start:
                    at_line_start = True
                    yield token
            else:
                at_line_start = False
                yield token


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
    return Lark(
        _grammar(),
        parser="lalr",
        lexer="contextual",
        postlex=_Layout(),
        propagate_positions=True,
        maybe_placeholders=False,
        cache=_analysis_cache(),
    )


# --- tree → syntax nodes -------------------------------------------------------------------------------------------

_SCALARS = {"TRUE": True, "FALSE": False, "NULL": None}


class _Build(Transformer[Token, Any]):
    """One method per grammar rule, each returning a node of `ccm.dsl.syntax`."""

    def __init__(self, file: str, text: str) -> None:
        super().__init__(visit_tokens=False)
        self.file = file
        self.text = text

    # helpers
    def _span(self, meta: Meta) -> s.Span:
        return s.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

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
        try:
            value = json.loads(token, strict=False)
        except json.JSONDecodeError:
            raise RouteSyntaxError(
                SourceLines({self.file: self.text}).diagnostic(
                    "error", self.file, token.line or 1, token.column or 1, "invalid escape in string",
                    'strings use JSON escapes: \\" \\\\ \\n \\t \\uXXXX',
                )
            ) from None
        assert isinstance(value, str)
        return value

    def _leaves(self, children: list[Any]) -> tuple[Any, ...]:
        return tuple(self.leaf(c) for c in children)

    # file and statements
    @v_args(meta=True)
    def start(self, meta: Meta, children: list[Any]) -> tuple[s.Statement, ...]:
        return tuple(children)

    @v_args(meta=True)
    def include(self, meta: Meta, children: list[Any]) -> s.Include:
        return s.Include(self.leaf(children[1]), self._span(meta))

    @v_args(meta=True)
    def settings(self, meta: Meta, children: list[Any]) -> s.Block:
        return s.Block(self.leaf(children[0]), None, tuple(children[1:]), self._span(meta))

    @v_args(meta=True)
    def provider(self, meta: Meta, children: list[Any]) -> s.Block:
        keyword, name, *items = children
        return s.Block(self.leaf(keyword), self.leaf(name), tuple(items), self._span(meta))

    @v_args(meta=True)
    def test(self, meta: Meta, children: list[Any]) -> s.Block:
        keyword, name, *items = children
        return s.Block(self.leaf(keyword), self.leaf(name), tuple(items), self._span(meta))

    @v_args(meta=True)
    def model(self, meta: Meta, children: list[Any]) -> s.ModelDecl:
        name = self.leaf(children[1])
        deployments = tuple(c for c in children[3:] if isinstance(c, s.Deployment))
        block = children[-1] if isinstance(children[-1], tuple) else None
        items, block_span = block if block else (None, None)
        return s.ModelDecl(name, deployments, items, self._span(meta), block_span)

    @v_args(meta=True)
    def deployment(self, meta: Meta, children: list[Any]) -> s.Deployment:
        weight = self.leaf(children[2]) if len(children) > 2 else None
        return s.Deployment(self.leaf(children[0]), weight, self._span(meta))

    @v_args(meta=True)
    def model_block(self, meta: Meta, children: list[Any]) -> tuple[tuple[s.Item, ...], s.Span]:
        return tuple(children), self._span(meta)

    @v_args(meta=True)
    def retry(self, meta: Meta, children: list[Any]) -> s.Retry:
        keyword, attempts, *rest = children
        backoff = next((c for c in rest if isinstance(c, s.Range)), None)
        on = next((c for c in rest if isinstance(c, tuple)), None)
        return s.Retry(self.leaf(keyword), self.leaf(attempts), backoff, on, self._span(meta))

    @v_args(meta=True)
    def breaker(self, meta: Meta, children: list[Any]) -> s.Breaker:
        keyword, *rest = children
        setting = self.leaf(rest[0]) if isinstance(rest[0], Token) else None
        failures = next((c[0] for c in rest if isinstance(c, tuple) and c[1] == "failures"), None)
        cooldown = next((c[0] for c in rest if isinstance(c, tuple) and c[1] == "cooldown"), None)
        return s.Breaker(self.leaf(keyword), setting, failures, cooldown, self._span(meta))

    @v_args(meta=True)
    def breaker_failures(self, meta: Meta, children: list[Any]) -> tuple[s.Word, str]:
        return self.leaf(children[0]), "failures"

    @v_args(meta=True)
    def breaker_cooldown(self, meta: Meta, children: list[Any]) -> tuple[s.Range | s.Word, str]:
        if len(children) == 2:
            return self.leaf(children[1]), "cooldown"
        return s.Range(self.leaf(children[1]), self.leaf(children[2]), self._span(meta)), "cooldown"

    @v_args(meta=True)
    def backoff(self, meta: Meta, children: list[Any]) -> s.Range:
        return s.Range(self.leaf(children[1]), self.leaf(children[2]), self._span(meta))

    @v_args(meta=True)
    def retry_on(self, meta: Meta, children: list[Any]) -> tuple[s.Word, ...]:
        return self._leaves(children[1:])

    @v_args(meta=True)
    def route(self, meta: Meta, children: list[Any]) -> s.RouteBlock:
        return s.RouteBlock(tuple(children[1:]), self._span(meta))

    @v_args(meta=True)
    def fallback(self, meta: Meta, children: list[Any]) -> s.Fallback:
        chain = tuple(c for c in children[1:] if isinstance(c, s.Word))
        return s.Fallback(chain, self._span(meta))

    # rules and conditions
    @v_args(meta=True)
    def rule(self, meta: Meta, children: list[Any]) -> s.RouteRule:
        return s.RouteRule(None, self.leaf(children[0]), children[2], self._span(meta))

    @v_args(meta=True)
    def direct_rule(self, meta: Meta, children: list[Any]) -> s.RouteRule:
        return s.RouteRule(self.leaf(children[0]), None, None, self._span(meta))

    @v_args(meta=True)
    def default_rule(self, meta: Meta, children: list[Any]) -> s.RouteRule:
        return s.RouteRule(self.leaf(children[0]), None, children[2], self._span(meta))

    @v_args(meta=True)
    def target(self, meta: Meta, children: list[Any]) -> s.Word:
        word = self.leaf(children[0])
        assert isinstance(word, s.Word)
        return word

    @v_args(meta=True)
    def or_condition(self, meta: Meta, children: list[Any]) -> s.Or:
        return s.Or(tuple(self.leaf(c) for c in children[::2]), self._span(meta))

    @v_args(meta=True)
    def and_condition(self, meta: Meta, children: list[Any]) -> s.And:
        return s.And(tuple(self.leaf(c) for c in children[::2]), self._span(meta))

    @v_args(meta=True)
    def not_condition(self, meta: Meta, children: list[Any]) -> s.Not:
        return s.Not(self.leaf(children[1]), self._span(meta))

    @v_args(meta=True)
    def paren(self, meta: Meta, children: list[Any]) -> s.Paren:
        return s.Paren(self.leaf(children[0]), self._span(meta))

    @v_args(meta=True)
    def flag(self, meta: Meta, children: list[Any]) -> s.Atom:
        return s.Atom(self.leaf(children[0]), (), self._span(meta))

    @v_args(meta=True)
    def atom(self, meta: Meta, children: list[Any]) -> s.Atom:
        keyword, *args = self._leaves(children)
        return s.Atom(keyword, tuple(args), self._span(meta))

    tokens = effort = model_name = header = tool = atom

    # values
    @v_args(meta=True)
    def env(self, meta: Meta, children: list[Any]) -> s.Env:
        name = self.leaf(children[1])
        default = self.leaf(children[2]) if len(children) > 2 else None
        return s.Env(name, default, self._span(meta))

    @v_args(meta=True)
    def object(self, meta: Meta, children: list[Any]) -> s.Object:
        return s.Object(tuple(children), self._span(meta))

    @v_args(meta=True)
    def member(self, meta: Meta, children: list[Any]) -> s.Member:
        key, separator, value = children
        return s.Member(self.leaf(key), str(separator), self.leaf(value), self._span(meta))

    @v_args(meta=True)
    def array(self, meta: Meta, children: list[Any]) -> s.Array:
        return s.Array(self._leaves(children), self._span(meta))

    # every block item (`context 128k`, `timeout connect 5s idle 30s`, `request file "x.json"`, …)
    def __default__(self, data: Token, children: list[Any], meta: Meta) -> s.Item:
        keyword, *args = self._leaves(children)
        return s.Item(keyword, tuple(args), self._span(meta))


# --- errors in words -----------------------------------------------------------------------------------------------

_CATEGORY = {
    "NAME": "a name",
    "MODELPATH": "a provider/model",
    "STRING": 'a "string"',
    "QUANTITY": "a number",
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
                _parser().parse(example)
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


def _syntax_diagnostic(error: UnexpectedInput, text: str, file: str) -> Diagnostic:
    lines = SourceLines({file: text})
    expected = _acceptable(error)
    if isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        if char == '"':
            return lines.diagnostic("error", file, error.line, error.column, "unterminated string",
                                    "a string ends with `\"` on the same line")
        hint = "strings use double quotes" if char == "'" else _expected(expected)
        return lines.diagnostic("error", file, error.line, error.column, f"unexpected character `{char}`", hint,
                                error.line, error.column + 1)
    if isinstance(error, UnexpectedEOF) or (isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        last = text.rstrip().splitlines() or [""]
        line, column = len(last), len(last[-1]) + 1
        message = "unexpected end of file: a `{` is not closed" if "RBRACE" in expected else "unexpected end of file"
        return lines.diagnostic("error", file, line, column, message, _expected(expected) if expected else None,
                                line, column + 1)
    assert isinstance(error, UnexpectedToken)
    token = error.token
    label = _example_states().get(_state_of(error))
    message = label or f"unexpected {_found(token)}"
    hint = did_you_mean(str(token), _keyword_values(expected)) if str(token).isidentifier() else None
    if hint is None and expected:
        hint = _expected(expected)
    line, column = token.line or 1, token.column or 1
    end_column = column + (1 if token.type == "_NL" else len(str(token)))
    return lines.diagnostic("error", file, line, column, message, hint, line, end_column)


def parse(text: str, file: str) -> s.SourceFile:
    """Parse `text` (the contents of `file`, which names it in spans and diagnostics)."""
    comments: list[Token] = []
    reset = _comments.set(comments)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as error:
        raise RouteSyntaxError(_syntax_diagnostic(error, text, file)) from None
    finally:
        _comments.reset(reset)
    try:
        statements = _Build(file, text).transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, RouteSyntaxError):
            raise error.orig_exc from None
        raise
    notes = tuple(
        s.Comment(str(c).rstrip(), s.Span(file, c.line or 1, c.column or 1, c.end_line or 1, c.end_column or 1))
        for c in comments
    )
    return s.SourceFile(file, text, statements, notes)
