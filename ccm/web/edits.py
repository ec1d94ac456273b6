"""The admin page's forms as text edits of the route file: the file stays the author's, comments and layout kept.

    set_provider(text, file, ProviderForm) / remove_provider(text, file, name)
    set_model(text, file, ModelForm)       / remove_model(text, file, name)
    set_rule(text, file, RuleForm)         / remove_rule(text, file, index)
    set_fallback(text, file, head, chain)  / remove_fallback(text, file, head)

Each parses the text (`ccm.dsl.parse`: a tree with spans) and splices new text into the spans it changes: one item of
a block (`url`, `price`), one rule, one statement; everything else — other items, comments, blank lines, the order
of things — is left byte for byte. New things are written in the formatter's layout; when the file as it was is
exactly what `ccm fmt` prints (the formatter is idempotent on it), the edited file is formatted as a whole
(`finish`), so alignment stays as the author's tooling keeps it; otherwise nothing but the changed part is touched.

Form values are checked here for shape (names, numbers, one line, no braces) so a field can never smuggle a second
statement into the file; whether the edited file *means* something (a known model, a valid condition) is the one
check's question, asked before anything is saved. A key is only ever `env("NAME")`: the forms take the variable's
name, never a key.

`EditError` carries a message for the person who filled the form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from ccm.dsl import parse
from ccm.dsl import syntax as s
from ccm.dsl.format import FormatError, format_source
from ccm.dsl.parser import RouteSyntaxError
from ccm.frozen import frozen

PROVIDER_TYPES = ("anthropic", "openai", "openai-responses", "gemini")
NAME = re.compile(r"[A-Za-z_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
TARGET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./:@+-]*")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
TOKENS = re.compile(r"\d+(?:\.\d+)?[km]?")
ENV_CALL = re.compile(r'env\("[A-Za-z_][A-Za-z0-9_]*"(?:,\s*"(?:[^"\\\n]|\\.)*")?\)')
URL = re.compile(r"https?://[^\s\"\\]+")
INDENT = "  "
KEEP_LITERAL_KEY = "(literal key kept)"  # what the provider form shows for a key written literally in the file
KEEP_URL = "(URL with credentials kept)"  # and for a URL that carries a user:password


class EditError(ValueError):
    """A form value the file cannot take, or a change the form cannot make (say, to a block written on one line)."""


@frozen
class ProviderForm:
    name: str
    type: str
    url: str  # a URL, or `env("NAME")` / `env("NAME", "default")` as written
    key: str  # an environment variable's name; "" for none; KEEP_LITERAL_KEY leaves a literal key alone


@frozen
class ModelForm:
    name: str
    target: str  # provider/model
    context: str = ""
    max_output: str = ""
    price_input: str = ""
    price_output: str = ""
    cache_write_5m: str = ""
    cache_write_1h: str = ""
    cache_read: str = ""
    web_search: str = ""  # US dollars per 1,000 searches


@frozen
class RuleForm:
    condition: str  # `default`, `direct`, or a condition
    target: str  # "" only for `direct`
    index: int | None = None  # the rule to change (its place in the route block, from 0); None: a new rule
    before: int | None = None  # for a new rule: insert before this one (None: before `default`, else at the end)


# --- text positions ---------------------------------------------------------------------------------------------


class _Doc:
    def __init__(self, text: str, file: str) -> None:
        try:
            self.tree = parse(text, file)
        except RouteSyntaxError as error:
            raise EditError(f"the file does not parse ({error.diagnostic.message}): "
                            "fix it in the editor first") from None
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.splices: list[tuple[int, int, int, str]] = []

    def offset(self, line: int, column: int) -> int:
        return self.starts[line - 1] + column - 1

    def line_start(self, line: int) -> int:
        return self.starts[min(line - 1, len(self.lines))]

    def line_text(self, line: int) -> str:
        return self.lines[line - 1].rstrip("\r\n") if 0 < line <= len(self.lines) else ""

    def indent(self, line: int) -> str:
        text = self.line_text(line)
        return text[: len(text) - len(text.lstrip())]

    def alone_on_lines(self, span: s.Span) -> bool:
        """Whether nothing but blanks precedes the span on its first line and nothing but blanks or a comment
        follows it on its last."""
        before = self.line_text(span.line)[: span.column - 1]
        after = self.line_text(span.end_line)[span.end_column - 1:].strip()
        return not before.strip() and (not after or after.startswith("#"))

    def replace(self, span: s.Span, text: str) -> None:
        self._splice(self.offset(span.line, span.column), self.offset(span.end_line, span.end_column), text)

    def insert_line_before(self, line: int, text: str) -> None:
        offset = self.line_start(line)
        if offset == len(self.text) and self.text and not self.text.endswith("\n"):
            text = "\n" + text
        self._splice(offset, offset, text)

    def remove_lines(self, first: int, last: int) -> None:
        """Lines `first`..`last`, with the comment lines right above them (they describe what goes), and one of the
        blank lines around them when both sides are blank."""
        while first > 1 and self.line_text(first - 1).lstrip().startswith("#"):
            first -= 1
        blank_before = first == 1 or not self.line_text(first - 1).strip()
        blank_after = last >= len(self.lines) or not self.line_text(last + 1).strip()
        if blank_before and blank_after and last < len(self.lines):
            last += 1
        self._splice(self.line_start(first), self.line_start(last + 1), "")

    def _splice(self, start: int, end: int, text: str) -> None:
        self.splices.append((start, end, len(self.splices), text))

    def result(self) -> str:
        out = self.text
        spans = sorted(self.splices, key=lambda x: (x[0], x[2]), reverse=True)
        previous_start = len(out) + 1
        for start, end, _, text in spans:
            if end > previous_start:
                raise EditError("overlapping edits (a bug in ccm's forms)")
            out = out[:start] + text + out[end:]
            previous_start = start
        return out

    # --- finding things -------------------------------------------------------------------------------------

    def blocks(self, keyword: str) -> list[s.Block]:
        return [st for st in self.tree.statements if isinstance(st, s.Block) and st.keyword.text == keyword]

    def provider(self, name: str) -> s.Block | None:
        return next((b for b in self.blocks("provider") if _label(b) == name), None)

    def models(self) -> list[s.ModelDecl]:
        return [st for st in self.tree.statements if isinstance(st, s.ModelDecl)]

    def model(self, name: str) -> s.ModelDecl | None:
        return next((m for m in self.models() if m.name.text == name), None)

    def route(self) -> s.RouteBlock | None:
        return next((st for st in self.tree.statements if isinstance(st, s.RouteBlock)), None)

    def fallbacks(self) -> list[s.Fallback]:
        return [st for st in self.tree.statements if isinstance(st, s.Fallback)]


def _label(block: s.Block) -> str | None:
    if isinstance(block.label, s.Word):
        return block.label.text
    if isinstance(block.label, s.Str):
        return block.label.value
    return None


def _item_args_span(item: s.Item) -> s.Span:
    first, last = item.args[0].span, item.args[-1].span
    return s.Span(first.file, first.line, first.column, last.end_line, last.end_column)


def _one_line(value: str, what: str) -> str:
    value = value.strip()
    if any(ch in value for ch in "\r\n\t\x00{}") or any(ord(ch) < 32 for ch in value):
        raise EditError(f"{what} must be one line, without braces or control characters")
    return value


Shape = Callable[[str], object]  # a pattern's fullmatch, called where it is named (so its use is visible there)


def _matching(fits: Shape, value: str, what: str, example: str) -> str:
    value = _one_line(value, what)
    if not fits(value):
        raise EditError(f"{what} `{value}` is not valid (for example {example})")
    return value


# --- items of a block -------------------------------------------------------------------------------------------


def _set_item(doc: _Doc, block_span: s.Span, items: Sequence[object], keyword: str, args: str | None,
              after: Sequence[str] = ()) -> None:
    """Give the block's `keyword` item these `args` (None: remove it), inserting it after the last item named in
    `after` (else after the block's last item) when the block lacks it."""
    found = next((i for i in items if isinstance(i, s.Item) and i.keyword.text == keyword), None)
    if found is not None:
        if args is None:
            if not doc.alone_on_lines(found.span):
                raise EditError(f"`{keyword}` shares its line with other items: change it in the editor")
            doc._splice(doc.line_start(found.span.line), doc.line_start(found.span.end_line + 1), "")
        elif found.args:
            doc.replace(_item_args_span(found), args)
        return
    if args is None:
        return
    if block_span.line == block_span.end_line:
        raise EditError("this block is written on one line: change it in the editor")
    spans = [i.span for i in items if isinstance(i, (s.Item, s.Retry, s.Breaker))]
    anchors = [i.span for i in items if isinstance(i, s.Item) and i.keyword.text in after]
    indent = doc.indent(spans[0].line) if spans else doc.indent(block_span.line) + INDENT
    line = (anchors[-1].end_line if anchors else spans[-1].end_line if spans else block_span.line) + 1
    doc.insert_line_before(line, f"{indent}{keyword} {args}\n")


# --- providers --------------------------------------------------------------------------------------------------


def _url_text(url: str) -> str:
    url = _one_line(url, "the URL")
    if ENV_CALL.fullmatch(url):
        return url
    if not URL.fullmatch(url):
        raise EditError('the URL must start with http:// or https:// (or be env("NAME", "https://…"))')
    return json.dumps(url)


def _key_text(key: str) -> str | None:
    key = key.strip()
    if not key:
        return None
    if key.startswith("env("):
        match = re.fullmatch(r'env\("([A-Za-z_][A-Za-z0-9_]*)"\)', key)
        if match is None:
            raise EditError('the key is the name of an environment variable, like ANTHROPIC_API_KEY')
        key = match.group(1)
    if not VARIABLE.fullmatch(key):
        raise EditError("the key is the name of an environment variable (letters, digits, _), never the key itself")
    return f'env("{key}")'


def set_provider(text: str, file: str, form: ProviderForm) -> str:
    name = _matching(lambda v: NAME.fullmatch(v), form.name, "the provider name", "`deepseek`")
    if form.type not in PROVIDER_TYPES:
        raise EditError(f"the type must be one of {', '.join(PROVIDER_TYPES)}")
    doc = _Doc(text, file)
    existing = doc.provider(name)
    url = None if form.url.strip() == KEEP_URL else _url_text(form.url)
    keep_literal = form.key.strip() == KEEP_LITERAL_KEY
    key = None if keep_literal else _key_text(form.key)
    if existing is not None:
        items = existing.items
        written = {i.keyword.text: i for i in items if isinstance(i, s.Item)}
        def current(keyword: str) -> str | None:
            return _arg_text(doc, written[keyword]) if keyword in written else None

        if current("type") != form.type:
            _set_item(doc, existing.span, items, "type", form.type)
        if url is not None and current("url") != url:
            _set_item(doc, existing.span, items, "url", url, after=("type",))
        if not keep_literal and current("key") != key:
            _set_item(doc, existing.span, items, "key", key, after=("url", "type"))
        return finish(text, doc.result(), file)
    if url is None:
        raise EditError("a new provider needs its URL")
    lines = [("type", form.type), ("url", url)] + ([("key", key)] if key else [])
    width = max(len(k) for k, _ in lines)
    body = "".join(f"{INDENT}{k.ljust(width)} {v}\n" for k, v in lines)
    block = f"provider {name} {{\n{body}}}\n"
    providers = doc.blocks("provider")
    if providers:
        doc.insert_line_before(providers[-1].span.end_line + 1, "\n" + block)
    else:
        _insert_before_first(doc, (s.ModelDecl, s.RouteBlock, s.Fallback), block)
    return finish(text, doc.result(), file)


def _arg_text(doc: _Doc, item: s.Item) -> str:
    span = _item_args_span(item)
    return doc.text[doc.offset(span.line, span.column): doc.offset(span.end_line, span.end_column)]


def _insert_before_first(doc: _Doc, kinds: tuple[type, ...], text: str) -> None:
    first = next((st for st in doc.tree.statements if isinstance(st, kinds)), None)
    if first is None:
        doc.insert_line_before(len(doc.lines) + 1, ("\n" if doc.text.strip() else "") + text)
        return
    line = first.span.line
    while line > 1 and doc.line_text(line - 1).lstrip().startswith("#"):
        line -= 1
    doc.insert_line_before(line, text + "\n")


def remove_provider(text: str, file: str, name: str) -> str:
    doc = _Doc(text, file)
    existing = doc.provider(name)
    if existing is None:
        raise EditError(f"there is no provider `{name}`")
    _remove_statement(doc, existing.span)
    return finish(text, doc.result(), file)


def _remove_statement(doc: _Doc, span: s.Span) -> None:
    if not doc.alone_on_lines(span):
        raise EditError("it shares its lines with something else: remove it in the editor")
    doc.remove_lines(span.line, span.end_line)


# --- models -----------------------------------------------------------------------------------------------------


def _optional(fits: Shape, value: str, what: str, example: str, lower: bool = False) -> str | None:
    value = value.strip().lower() if lower else value.strip()
    return _matching(fits, value, what, example) if value else None


def _price_text(form: ModelForm) -> str | None:
    parts = []
    for label, value in (("input", form.price_input), ("output", form.price_output),
                         ("cache_write_5m", form.cache_write_5m), ("cache_write_1h", form.cache_write_1h),
                         ("cache_read", form.cache_read), ("web_search", form.web_search)):
        number = _optional(lambda v: NUMBER.fullmatch(v), value, f"the {label} price", "`0.27`")
        if number is not None:
            parts.append(f"{label} {number}")
    if not parts:
        return None
    if not form.price_input.strip() or not form.price_output.strip():
        raise EditError("a price needs both input and output (US dollars per million tokens)")
    return " ".join(parts)


def set_model(text: str, file: str, form: ModelForm) -> str:
    name = _matching(lambda v: NAME.fullmatch(v), form.name, "the model name", "`coder`")
    target = _matching(lambda v: TARGET.fullmatch(v), form.target, "the target", "`deepseek/deepseek-chat`")
    if "/" not in target:
        raise EditError("the target is provider/model, like deepseek/deepseek-chat")
    def tokens(value: str, what: str, example: str) -> str | None:
        return _optional(lambda v: TOKENS.fullmatch(v), value, what, example, lower=True)

    items = [("context", tokens(form.context, "the context", "`128k`")),
             ("max_output", tokens(form.max_output, "max_output", "`8k`")),
             ("price", _price_text(form))]
    doc = _Doc(text, file)
    existing = doc.model(name)
    if existing is None:
        given = [(k, v) for k, v in items if v is not None]
        declaration = f"model {name} = {target}"
        if given:
            width = max(len(k) for k, _ in given)
            declaration += " {\n" + "".join(f"{INDENT}{k.ljust(width)} {v}\n" for k, v in given) + "}"
        models = doc.models()
        anchor = models[-1].span.end_line if models else None
        if anchor is not None:
            doc.insert_line_before(anchor + 1, declaration + "\n")
        else:
            _insert_before_first(doc, (s.RouteBlock, s.Fallback), declaration + "\n")
        return finish(text, doc.result(), file)
    if existing.path.text != target:
        if len(existing.deployments) > 1:
            raise EditError(f"`{name}` has several deployments: change them in the editor")
        doc.replace(existing.path.span, target)
    if existing.items is None:
        given = [(k, v) for k, v in items if v is not None]
        if given:
            end = existing.deployments[-1].span
            width = max(len(k) for k, _ in given)
            block = " {\n" + "".join(f"{INDENT}{k.ljust(width)} {v}\n" for k, v in given) + "}"
            doc._splice(doc.offset(end.end_line, end.end_column), doc.offset(end.end_line, end.end_column), block)
        return finish(text, doc.result(), file)
    assert existing.block_span is not None
    written = {i.keyword.text: i for i in existing.items}
    for keyword, value in items:
        current = _arg_text(doc, written[keyword]) if keyword in written else None
        if value != current:
            _set_item(doc, existing.block_span, existing.items, keyword, value,
                      after=("context", "max_output", "price"))
    return finish(text, doc.result(), file)


def remove_model(text: str, file: str, name: str) -> str:
    doc = _Doc(text, file)
    existing = doc.model(name)
    if existing is None:
        raise EditError(f"there is no model `{name}`")
    _remove_statement(doc, existing.span)
    return finish(text, doc.result(), file)


# --- rules ------------------------------------------------------------------------------------------------------


def _rule_text(form: RuleForm) -> str:
    condition = _one_line(form.condition, "the condition")
    if not condition:
        raise EditError("a rule needs a condition (or `default`)")
    if "->" in condition or "#" in condition.replace('"#', "").replace('#"', ""):
        raise EditError("the condition is what comes before `->` (the target has its own field)")
    if condition == "direct":
        if form.target.strip():
            raise EditError("`direct` takes its target from the request: leave the target empty")
        return "direct"
    target = _matching(lambda v: TARGET.fullmatch(v), form.target, "the target", "`coder`")
    return f"{condition} -> {target}"


def set_rule(text: str, file: str, form: RuleForm) -> str:
    rule = _rule_text(form)
    doc = _Doc(text, file)
    route = doc.route()
    if route is None:
        raise EditError("the file has no route block")
    rules = route.rules
    if form.index is not None:
        if not 0 <= form.index < len(rules):
            raise EditError(f"there is no rule {form.index + 1}")
        doc.replace(rules[form.index].span, rule)
        return finish(text, doc.result(), file)
    if form.before is not None and 0 <= form.before < len(rules):
        place: s.RouteRule | None = rules[form.before]
    else:
        place = next((r for r in rules if r.keyword is not None and r.keyword.text == "default"), None)
    indent = doc.indent(rules[0].span.line) if rules else INDENT
    if place is not None:
        line = place.span.line
        while doc.line_text(line - 1).lstrip().startswith("#") and line - 1 > route.span.line:
            line -= 1
        doc.insert_line_before(line, f"{indent}{rule}\n")
    elif route.span.line == route.span.end_line:
        raise EditError("the route block is written on one line: change it in the editor")
    else:
        doc.insert_line_before(route.span.end_line, f"{indent}{rule}\n")
    return finish(text, doc.result(), file)


def remove_rule(text: str, file: str, index: int) -> str:
    doc = _Doc(text, file)
    route = doc.route()
    if route is None or not 0 <= index < len(route.rules):
        raise EditError(f"there is no rule {index + 1}")
    span = route.rules[index].span
    if not doc.alone_on_lines(span):
        raise EditError("the rule shares its line with something else: remove it in the editor")
    doc._splice(doc.line_start(span.line), doc.line_start(span.end_line + 1), "")
    return finish(text, doc.result(), file)


# --- fallbacks --------------------------------------------------------------------------------------------------


def set_fallback(text: str, file: str, head: str, chain: Sequence[str]) -> str:
    names = [_matching(lambda v: TARGET.fullmatch(v), n, "a model in the chain", "`opus`")
             for n in [head, *chain] if n.strip()]
    if len(names) < 2:
        raise EditError("a fallback chain names a model and at least one model to fall back to")
    line = "fallback " + " -> ".join(names)
    doc = _Doc(text, file)
    fallbacks = doc.fallbacks()
    existing = next((f for f in fallbacks if f.chain[0].text == names[0]), None)
    if existing is not None:
        doc.replace(existing.span, line)
    elif fallbacks:
        doc.insert_line_before(fallbacks[-1].span.end_line + 1, line + "\n")
    else:
        route = doc.route()
        if route is None:
            doc.insert_line_before(len(doc.lines) + 1, "\n" + line + "\n")
        else:
            doc.insert_line_before(route.span.end_line + 1, "\n" + line + "\n")
    return finish(text, doc.result(), file)


def remove_fallback(text: str, file: str, head: str) -> str:
    doc = _Doc(text, file)
    existing = next((f for f in doc.fallbacks() if f.chain[0].text == head), None)
    if existing is None:
        raise EditError(f"`{head}` has no fallback chain")
    _remove_statement(doc, existing.span)
    return finish(text, doc.result(), file)


# --- formatting -------------------------------------------------------------------------------------------------


def finish(original: str, edited: str, file: str) -> str:
    """The edited text, formatted whole when the original was exactly `ccm fmt`'s output."""
    try:
        if format_source(original, file) != original:
            return edited
        return format_source(edited, file)
    except (RouteSyntaxError, FormatError):
        return edited  # the check will say what is wrong with it
