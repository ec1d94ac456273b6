"""`ccm fmt`: print a syntax tree back in canonical form, every comment kept.

The layout: two-space indentation; one block item, rule or statement per line; blocks always open (`{` on the
header line, `}` alone); a JSON-ish value stays on one line when it was written on one line and becomes one member
per line otherwise; at most one blank line where the author left any. Within a run of consecutive lines, rule arrows,
block item values, `=` of model aliases and trailing comments line up.

Comments are attached by position: a comment on its own line goes before the next thing printed after it (at that
thing's indentation); a comment after code stays at the end of that code's last line. `format_source` re-parses its
own output and refuses (raises `FormatError`) rather than return text that means something else or lost a comment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ccm.dsl import syntax as s
from ccm.dsl.parser import parse
from ccm.dsl.printer import member_text, rule_text, value_text

INDENT = "  "


class FormatError(Exception):
    """The formatter could not reproduce the file faithfully (a bug in ccm, never in the file)."""


@dataclass
class _Line:
    depth: int
    left: str
    right: str | None = None  # aligned into a column after `left` within a run of the same group
    comment: str | None = None
    group: str | None = None
    joiner: str = " "


class _Printer:
    def __init__(self, tree: s.SourceFile) -> None:
        self.comments = sorted(tree.comments, key=lambda c: (c.span.line, c.span.column))
        self.next_comment = 0
        self.lines: list[_Line | None] = []  # None: a blank line
        self.last_line = 0  # the last source line printed
        self.fresh = True  # just after a `{` (or at the top): no blank line here

    # --- comments and blank lines ---------------------------------------------------------------------------

    def _gap(self, line: int) -> None:
        if not self.fresh and line > self.last_line + 1:
            self.lines.append(None)
        self.fresh = False

    def leading(self, before_line: int, depth: int) -> None:
        while self.next_comment < len(self.comments) and self.comments[self.next_comment].span.line < before_line:
            comment = self.comments[self.next_comment]
            self.next_comment += 1
            self._gap(comment.span.line)
            self.lines.append(_Line(depth, comment.text))
            self.last_line = comment.span.line

    def trailing(self, line: int) -> str | None:
        if self.next_comment < len(self.comments) and self.comments[self.next_comment].span.line == line:
            self.next_comment += 1
            return self.comments[self.next_comment - 1].text
        return None

    def start(self, line: int, depth: int) -> None:
        self.leading(line, depth)
        self._gap(line)

    def emit(self, line: _Line, source_line: int, take_comment: bool = True) -> None:
        if take_comment:
            line.comment = self.trailing(source_line)
        self.lines.append(line)
        self.last_line = max(self.last_line, source_line)

    # --- blocks -----------------------------------------------------------------------------------------------

    def block(self, header: str, span: s.Span, depth: int, items: Sequence[object],
              item: Callable[[object, int, bool], None], take_header_comment: bool = True,
              header_depth: int | None = None) -> None:
        """`header {`, the items one level deeper, `}`. `item(node, depth, last_on_its_line)` prints one item.
        `header_depth` indents a header that continues an earlier line (a model's last line of deployments)."""
        opening = depth if header_depth is None else header_depth
        if not items and span.end_line == span.line:
            self.emit(_Line(opening, f"{header} {{}}"), span.line)
            return
        self.emit(_Line(opening, f"{header} {{"), span.line, take_header_comment)
        self.fresh = True
        for index, node in enumerate(items):
            following = items[index + 1] if index + 1 < len(items) else None
            last_on_line = following is None or _span(following).line != _span(node).end_line
            item(node, depth + 1, last_on_line)
        self.leading(span.end_line, depth + 1)
        self.fresh = False
        self.emit(_Line(depth, "}"), span.end_line)
        self.fresh = False

    # --- statements -------------------------------------------------------------------------------------------

    def statement(self, node: object, depth: int, last_on_line: bool = True) -> None:
        span = _span(node)
        self.start(span.line, depth)
        if isinstance(node, s.Include):
            self.emit(_Line(depth, f"include {node.path.raw}"), span.end_line, last_on_line)
        elif isinstance(node, s.Retry):
            self.emit(_Line(depth, node.keyword.text, _retry_text(node), group="item"), span.end_line, last_on_line)
        elif isinstance(node, s.Breaker):
            self.emit(_Line(depth, node.keyword.text, _breaker_text(node), group="item"), span.end_line, last_on_line)
        elif isinstance(node, s.Fallback):
            self.emit(_Line(depth, "fallback " + " -> ".join(w.text for w in node.chain)), span.end_line,
                      last_on_line)
        elif isinstance(node, s.ModelDecl):
            self.model(node, depth, last_on_line)
        elif isinstance(node, s.RouteBlock):
            self.block("route", span, depth, node.rules, self.rule)
        else:
            assert isinstance(node, s.Block)
            label = "" if node.label is None else " " + value_text(node.label)
            self.block(node.keyword.text + label, span, depth, node.items, self.item)

    def model(self, node: s.ModelDecl, depth: int, last_on_line: bool) -> None:
        """`model NAME = deployments`, keeping the author's line breaks between deployments: each later line of them
        is indented two levels, so it reads as a continuation rather than as an item of the block."""
        header = f"model {node.name.text}"
        lines = _deployment_lines(node.deployments)
        if len(lines) == 1 and node.items is None:
            self.emit(_Line(depth, header, f"= {lines[0][0]}", group="model"), node.span.end_line, last_on_line)
            return
        *leading, (last_text, last_line) = lines
        for index, (text, line) in enumerate(leading):
            if index == 0:
                self.emit(_Line(depth, f"{header} = {text},"), line)
            else:
                self.leading(line, depth + 2)
                self.emit(_Line(depth + 2, f"{text},"), line)
        head = last_text if leading else f"{header} = {last_text}"
        head_depth = depth + 2 if leading else depth
        if leading:
            self.leading(last_line, depth + 2)
        if node.items is None:
            self.emit(_Line(head_depth, head), last_line, last_on_line)
            return
        assert node.block_span is not None
        block_span = replace(node.block_span, line=last_line)
        self.block(head, block_span, depth, node.items, self.item, header_depth=head_depth)

    def rule(self, node: object, depth: int, last_on_line: bool) -> None:
        assert isinstance(node, s.RouteRule)
        self.start(node.span.line, depth)
        target = None if node.target is None else f"-> {node.target.text}"
        line = _Line(depth, rule_text(node), target, group="rule")
        self.emit(line, node.span.end_line, last_on_line)

    def item(self, node: object, depth: int, last_on_line: bool) -> None:
        if isinstance(node, (s.Retry, s.Breaker)):
            self.statement(node, depth, last_on_line)
            return
        assert isinstance(node, s.Item)
        self.start(node.span.line, depth)
        *head, tail = node.args
        if isinstance(tail, s.Object) and tail.multiline:
            prefix = " ".join([node.keyword.text, *(value_text(a) for a in head)])
            self.json_block(prefix, tail, depth)
            return
        args = " ".join(value_text(a) for a in node.args)
        self.emit(_Line(depth, node.keyword.text, args, group="item"), node.span.end_line, last_on_line)

    def json_block(self, prefix: str, value: s.Object | s.Array, depth: int) -> None:
        opener, closer = ("{", "}") if isinstance(value, s.Object) else ("[", "]")
        self.emit(_Line(depth, f"{prefix} {opener}".lstrip()), value.span.line)
        self.fresh = True
        children: Sequence[s.Member | s.JsonValue] = value.members if isinstance(value, s.Object) else value.items
        for index, child in enumerate(children):
            span = child.span
            self.start(span.line, depth + 1)
            inner = child.value if isinstance(child, s.Member) else child
            if isinstance(inner, (s.Object, s.Array)) and inner.multiline:
                head = _member_head(child) if isinstance(child, s.Member) else ""
                self.json_block(head, inner, depth + 1)
                continue
            following = children[index + 1] if index + 1 < len(children) else None
            last_on_line = following is None or following.span.line != span.end_line
            text = member_text(child) if isinstance(child, s.Member) else value_text(child)
            self.emit(_Line(depth + 1, text), span.end_line, last_on_line)
        self.leading(value.span.end_line, depth + 1)
        self.fresh = False
        self.emit(_Line(depth, closer), value.span.end_line)

    def finish(self) -> str:
        self.leading(10**9, 0)
        return _render(self.lines)


def _member_head(member: s.Member) -> str:
    return f"{value_text(member.key)}{':' if member.separator == ':' else ' ='}"


def _retry_text(node: s.Retry) -> str:
    parts = [node.attempts.text]
    if node.backoff is not None:
        parts += ["backoff", value_text(node.backoff)]
    if node.on is not None:
        parts += ["on", *(w.text for w in node.on)]
    return " ".join(parts)


def _breaker_text(node: s.Breaker) -> str:
    if node.setting is not None:
        return node.setting.text
    parts = []
    if node.failures is not None:
        parts += [node.failures.text, "failures"]
    if node.cooldown is not None:
        parts += ["cooldown", value_text(node.cooldown)]
    return " ".join(parts)


def _deployment_lines(deployments: Sequence[s.Deployment]) -> list[tuple[str, int]]:
    """The deployments as written on each source line: (`a/b weight 3, c/d`, the line they end on)."""
    lines: list[tuple[str, int]] = []
    for deployment in deployments:
        text = deployment.path.text
        if deployment.weight is not None:
            text += f" weight {deployment.weight.text}"
        if lines and lines[-1][1] == deployment.span.line:
            lines[-1] = (f"{lines[-1][0]}, {text}", deployment.span.end_line)
        else:
            lines.append((text, deployment.span.end_line))
    return lines


def _span(node: object) -> s.Span:
    span = getattr(node, "span")  # noqa: B009 - any syntax node, typed as object: the attribute is read by name
    assert isinstance(span, s.Span)
    return span


# --- layout: alignment and text --------------------------------------------------------------------------------


def _runs(lines: list[_Line | None], key: Callable[[_Line], object]) -> list[list[_Line]]:
    """Maximal runs of consecutive lines with the same non-None key."""
    runs: list[list[_Line]] = []
    current: list[_Line] = []
    current_key: object = None
    for line in lines:
        line_key = key(line) if line is not None else None
        if line_key is None or line_key != current_key:
            if len(current) > 1:
                runs.append(current)
            current = []
        if line is not None and line_key is not None:
            current.append(line)
        current_key = line_key
    if len(current) > 1:
        runs.append(current)
    return runs


def _code(line: _Line) -> str:
    text = INDENT * line.depth + line.left
    return text if line.right is None else text + line.joiner + line.right


def _render(lines: list[_Line | None]) -> str:
    for run in _runs(lines, lambda ln: (ln.depth, ln.group) if ln.group else None):
        aligned = [ln for ln in run if ln.right is not None]
        width = max((len(ln.left) for ln in aligned), default=0)
        for ln in aligned:
            ln.joiner = " " * (width - len(ln.left) + 1)
    for run in _runs(lines, lambda ln: ln.depth if ln.comment is not None else None):
        width = max(len(_code(ln)) for ln in run)
        for ln in run:
            ln.comment = " " * (width - len(_code(ln))) + (ln.comment or "")
    out = []
    for line in lines:
        if line is None:
            out.append("")
        elif line.comment is not None:
            out.append(f"{_code(line)}  {line.comment}".rstrip())
        else:
            out.append(_code(line).rstrip())
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def format_tree(tree: s.SourceFile) -> str:
    printer = _Printer(tree)
    for statement in tree.statements:
        printer.statement(statement, 0)
    return printer.finish()


def _shape(node: object) -> object:
    """A node with spans (and the `raw` spelling of strings) removed, to compare meaning before and after."""
    if isinstance(node, (list, tuple)):
        return tuple(_shape(n) for n in node)
    if isinstance(node, s.Span):
        return None
    if hasattr(node, "__dataclass_fields__"):
        fields = node.__dataclass_fields__
        return (type(node).__name__, tuple(_shape(getattr(node, f)) for f in fields if f not in ("span", "block_span")))
    return node


def format_source(text: str, file: str) -> str:
    """Canonical text for a route file. Raises `RouteSyntaxError` for a file that does not parse."""
    tree = parse(text, file)
    formatted = format_tree(tree)
    again = parse(formatted, file)
    if _shape(again.statements) != _shape(tree.statements):
        raise FormatError(f"{file}: formatting would change the file's meaning; left unchanged")
    if sorted(c.text for c in again.comments) != sorted(c.text for c in tree.comments):
        raise FormatError(f"{file}: formatting would lose a comment; left unchanged")
    return formatted
