"""The syntax tree of a route file: what was written and where, with no meaning attached.

Every node carries a `Span` (start and end, 1-based lines and columns, end exclusive) so the compiler can point at
the exact token and the formatter can keep blank lines and comments where the author put them. Values stay as
written: `128k` is a `Word`, not a number; the compiler decides whether it is a token count, a size or a duration.

Block items share one shape, `Item(keyword, args)`: `context 128k`, `drop top_k tool_choice`,
`timeout connect 5s idle 30s`. The grammar has already checked their shape; the compiler reads them by keyword.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from ccm.frozen import frozen


@frozen
class Span:
    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@frozen
class Comment:
    text: str  # including the leading '#'
    span: Span


# --- leaves --------------------------------------------------------------------------------------------------------


@frozen
class Word:
    """A name, keyword, number with suffix, comparison operator or `provider/model`, exactly as written."""

    text: str
    span: Span


@frozen
class Str:
    """A double-quoted string: `value` decoded, `raw` as written (quotes included)."""

    value: str
    raw: str
    span: Span


@frozen
class Env:
    """`env("NAME")` or `env("NAME", "default")`."""

    name: Str
    default: Str | None
    span: Span


@frozen
class FileRef:
    """`file("/run/secrets/openai")`."""

    path: Str
    span: Span


@frozen
class Range:
    """`500ms..8s`."""

    low: Word
    high: Word
    span: Span


# --- JSON-ish values -----------------------------------------------------------------------------------------------


@frozen
class Scalar:
    """A JSON number, true, false or null."""

    value: Any
    raw: str
    span: Span


@frozen
class Member:
    key: Word | Str
    separator: str  # ':' or '=' as written
    value: JsonValue
    span: Span


@frozen
class Object:
    members: tuple[Member, ...]
    span: Span

    @property
    def multiline(self) -> bool:
        return self.span.end_line > self.span.line


@frozen
class Array:
    items: tuple[JsonValue, ...]
    span: Span

    @property
    def multiline(self) -> bool:
        return self.span.end_line > self.span.line


JsonValue = Str | Scalar | Object | Array | Env | FileRef
Arg = Word | Str | Env | FileRef | Object | Range


# --- block items and conditions ------------------------------------------------------------------------------------


@frozen
class Item:
    """One line-ish entry of a block: a keyword and its arguments (`price input 0.27 output 1.10`)."""

    keyword: Word
    args: tuple[Arg, ...]
    span: Span


@frozen
class Retry:
    """`retry 3 backoff 500ms..8s on 429 5xx timeout`, at file level or inside a provider."""

    keyword: Word
    attempts: Word
    backoff: Range | None
    on: tuple[Word, ...] | None
    span: Span


@frozen
class Breaker:
    """`breaker 5 failures cooldown 10s..2m`, `breaker cooldown 30s`, `breaker off`: at file level or in a provider.
    `setting` is the word written instead of the numbers (`off`)."""

    keyword: Word
    setting: Word | None
    failures: Word | None
    cooldown: Range | Word | None
    span: Span


@frozen
class Atom:
    """A condition test: `websearch`, `tokens > 100k`, `header "x-team" ~ "infra*"`."""

    keyword: Word
    args: tuple[Word | Str, ...]
    span: Span


@frozen
class Not:
    operand: Condition
    span: Span


@frozen
class And:
    operands: tuple[Condition, ...]
    span: Span


@frozen
class Or:
    operands: tuple[Condition, ...]
    span: Span


@frozen
class Paren:
    """Parentheses as written: kept so the formatter does not rewrite the author's grouping."""

    inner: Condition
    span: Span


Condition = Atom | Not | And | Or | Paren


@frozen
class RouteRule:
    """`condition -> target`; `condition` is None for `default -> target`; `target` is None for `direct`."""

    keyword: Word | None  # `default` or `direct`
    condition: Condition | None
    target: Word | None
    span: Span


# --- statements ----------------------------------------------------------------------------------------------------


@frozen
class Include:
    path: Str
    span: Span


@frozen
class Block:
    """`settings { … }`, `provider NAME { … }`, `test "name" { … }`; `label` is the name, if any."""

    keyword: Word
    label: Word | Str | None
    items: tuple[Item | Retry | Breaker, ...]
    span: Span


@frozen
class Deployment:
    """`provider/model`, optionally `weight 3`: one upstream on the right of `model NAME =`."""

    path: Word
    weight: Word | None
    span: Span


@frozen
class ModelDecl:
    """`model NAME = provider/model`, or several deployments separated by commas, with an optional `{ … }` of
    options (`items` is None without braces)."""

    name: Word
    deployments: tuple[Deployment, ...]  # at least one
    items: tuple[Item, ...] | None
    span: Span
    block_span: Span | None = None

    @property
    def path(self) -> Word:
        """The first deployment's `provider/model`."""
        return self.deployments[0].path


@frozen
class RouteBlock:
    rules: tuple[RouteRule, ...]
    span: Span


@frozen
class Fallback:
    chain: tuple[Word, ...]  # the head first
    span: Span


Statement = Include | Block | ModelDecl | RouteBlock | Fallback | Retry | Breaker


@frozen
class SourceFile:
    name: str
    text: str
    statements: tuple[Statement, ...]
    comments: tuple[Comment, ...] = field(default=())
