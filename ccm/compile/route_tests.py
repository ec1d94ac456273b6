"""In-file tests: `test "name" { request … expect … }` compiled into `RouteTest`s, and the runner that checks them.

A request is inline (JSON-ish; `messages` and `max_tokens` get harmless defaults so a test states only what it is
about) or a captured JSON file, read at compile time relative to the route file: either a bare Messages body or the
fixtures' `{method, path, headers, body}` shape, whose headers then count too. `header` lines add or replace headers;
`tokens N` stands in for the token count so a long-context test needs no huge request.

`run_route_tests(table)` runs each test through `ccm.route.select_route`, the same function the server uses, and
returns one error per failing test at the test's name. The hot-reload path calls it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from ccm import table as t
from ccm.compile import values
from ccm.compile.context import Context, table_span
from ccm.compile.files import MAX_REQUEST_FILE_BYTES, FileRefused, read_confined
from ccm.diagnostics import Diagnostic, SourceLines
from ccm.dsl import syntax as s

DEFAULT_MESSAGES = [{"role": "user", "content": "hi"}]
DEFAULT_MAX_TOKENS = 1024


def route_test(ctx: Context, block: s.Block, base_dir: Path, roots: tuple[Path, ...]) -> t.RouteTest | None:
    assert isinstance(block.label, s.Str)
    failed = ctx.failed
    name = block.label.value
    request: dict[str, Any] | None = None
    headers: dict[str, str] = {}
    tokens: int | None = None
    caller: t.Standing | None = None
    expect: str | None = None
    seen: dict[str, s.Item] = {}
    for item in block.items:
        assert isinstance(item, s.Item)
        keyword = item.keyword.text
        if keyword in seen and keyword != "header":
            ctx.error(item.keyword.span, f"`{keyword}` is given twice in test \"{name}\"",
                      f"first given at {seen[keyword].keyword.span}")
            continue
        seen[keyword] = item
        if keyword == "request":
            loaded = _request(ctx, item, base_dir, roots)
            if loaded is not None:
                request, file_headers = loaded
                headers = {**file_headers, **headers}
        elif keyword == "header":
            header_name, header_value = item.args
            assert isinstance(header_name, s.Str) and isinstance(header_value, s.Str)
            headers[header_name.value.lower()] = header_value.value
        elif keyword == "tokens":
            word = item.args[0]
            assert isinstance(word, s.Word)
            tokens = ctx.read(values.token_count, word)
        elif keyword == "caller":
            caller = _caller(ctx, item)
        elif keyword == "expect":
            word = item.args[0]
            assert isinstance(word, s.Word)
            expect = ctx.target(word)
    for required, example in (("request", 'request { model: "claude-haiku-5-5" }'), ("expect", "expect NAME")):
        if required not in seen:
            ctx.error(block.label.span, f"test \"{name}\" has no `{required}`", f"add a line: {example}")
    if ctx.failed and not failed or request is None or expect is None:
        return None
    return t.RouteTest(name=name, request=request, headers=tuple(headers.items()), tokens=tokens, caller=caller,
                       expect=expect, span=table_span(block.label.span))


CALLER_EXAMPLE = 'caller { key: "alice", plan: "pro", team: "web", budget: "15%", spent: { today: 3, month: 40 } }'


def _caller(ctx: Context, item: s.Item) -> t.Standing | None:
    """`caller { key: "alice", plan: "pro", budget: "15%", spent: { today: 3 } }`: who the test's request is from."""
    (written,) = item.args
    assert isinstance(written, s.Object)
    try:
        return caller_of(values.json_value(written))
    except values.BadValue as error:
        ctx.error(written.span, f"the test's caller: {error.message}", error.hint or CALLER_EXAMPLE)
        return None


def caller_of(value: Any) -> t.Standing:
    """A caller written as JSON (a test's `caller { … }`, `ccm explain --caller`); `BadValue` when it is not one."""
    if not isinstance(value, dict):
        raise values.BadValue("a caller is an object", CALLER_EXAMPLE)
    unknown = set(value) - {"key", "plan", "team", "budget", "spent"}
    if unknown:
        raise values.BadValue(f"a caller has no `{sorted(unknown)[0]}`", CALLER_EXAMPLE)
    fields: dict[str, Any] = {}
    for name in ("key", "plan", "team"):
        if name in value:
            if not isinstance(value[name], str):
                raise values.BadValue(f"the caller's `{name}` is a string", CALLER_EXAMPLE)
            fields[name] = value[name]
    if "budget" in value:
        fields["budget_left"] = values.share(str(value["budget"]))
    spent = value.get("spent", {})
    if not isinstance(spent, dict) or not set(spent) <= {"today", "week", "month"}:
        raise values.BadValue("`spent` is an object of today, week and month", CALLER_EXAMPLE)
    try:
        fields["spent"] = tuple((period, values.dollars(f"${amount}")) for period, amount in spent.items())
    except ArithmeticError:
        raise values.BadValue("what a caller spent is a number of dollars", CALLER_EXAMPLE) from None
    return t.Standing(**fields)


def _request(
    ctx: Context, item: s.Item, base_dir: Path, roots: tuple[Path, ...]
) -> tuple[dict[str, Any], dict[str, str]] | None:
    if isinstance(item.args[0], s.Object):
        body = item.args[0]
        env = values.find_env(body)
        if env is not None:
            ctx.error(env.span, f"`{values.reference_kind(env)}` cannot be used in a test request",
                      "write the value literally")
            return None
        request = values.json_value(body)
        if "model" not in request:
            ctx.error(body.span, "the test request has no `model`", 'add it: request { model: "claude-opus-5-5" }')
            return None
        request.setdefault("messages", DEFAULT_MESSAGES)
        request.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        return request, {}
    path_node = item.args[1]
    assert isinstance(path_node, s.Str)
    try:
        data = orjson.loads(read_confined(base_dir, path_node.value, roots, MAX_REQUEST_FILE_BYTES))
    except FileRefused as refused:
        if refused.missing:
            ctx.error(path_node.span, f"request file not found: `{path_node.value}`",
                      f"paths are relative to the route file's folder ({base_dir})")
        else:
            ctx.error(path_node.span, f"cannot read request file `{path_node.value}`: {refused.message}", refused.hint)
        return None
    except orjson.JSONDecodeError as error:
        # where, never what: a request file may be no request at all
        ctx.error(path_node.span, f"request file `{path_node.value}` is not valid JSON "
                                  f"(line {error.lineno}, column {error.colno})")
        return None
    return split_capture(data, lambda message: ctx.error(path_node.span, message))


def split_capture(data: Any, problem: Callable[[str], object]) -> tuple[dict[str, Any], dict[str, str]] | None:
    """A captured request as (body, lower-cased headers): the fixtures' `{method, path, headers, body}` shape or a
    bare Messages body. `problem(message)` is called when it is neither."""
    if isinstance(data, dict) and isinstance(data.get("body"), dict) and ("path" in data or "method" in data):
        raw_headers = data.get("headers")
        items = raw_headers.items() if isinstance(raw_headers, dict) else ()
        headers = {str(k).lower(): str(v) for k, v in items}
        return data["body"], headers
    if isinstance(data, dict) and "model" in data:
        return data, {}
    problem("a request is a Messages body (with `model`) or a captured {method, path, headers, body}")
    return None


# --- the runner --------------------------------------------------------------------------------------------------


def run_route_tests(table: t.RoutingTable, sources: Mapping[str, str] | None = None) -> list[Diagnostic]:
    """Run the table's tests; one error per failing test. `sources` (file name → text) quotes the failing line
    without reading the file again; otherwise it is read from disk when it exists."""
    from ccm.route import select_route  # the router is imported only when there are tests to run

    lines = SourceLines(sources)
    failures: list[Diagnostic] = []
    for test in table.tests:
        count = None if test.tokens is None else (lambda _body, n=test.tokens: n)
        span = test.span or t.Span(file=table.sources[0] if table.sources else "<routes>", line=1, column=1)
        try:
            decision = select_route(table, test.request, dict(test.headers), count_tokens=count, caller=test.caller)
        except Exception as error:  # a test must report, never crash `ccm check` or a reload
            message = f'test "{test.name}" could not run: {error.__class__.__name__}: {error}'
            failures.append(lines.diagnostic("error", span.file, span.line, span.column, message))
            continue
        got = decision.target
        if _meets(table, test.expect, got):
            continue
        rule = decision.rule
        where = f" at {rule.span}" if rule is not None and rule.span is not None else ""
        how = f"rule {decision.rule_index + 1} `{rule.source}`{where}" if rule is not None else decision.reason
        message = f'test "{test.name}": expected {test.expect}, got {got.name} ({how})'
        failures.append(lines.diagnostic("error", span.file, span.line, span.column, message))
    return failures


def _meets(table: t.RoutingTable, expect: str, got: t.Model) -> bool:
    if got.name == expect:
        return True
    # `expect deepseek/deepseek-chat` is met by an alias of that same upstream model (an explicit pick resolves to it).
    wanted = table.models.get(expect)
    return wanted is not None and not wanted.declared and (wanted.provider, wanted.model) == (got.provider, got.model)
