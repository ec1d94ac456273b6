"""`ccm explain FILE REQUEST.json`: where one request goes and why.

Shows what the rules read from the request, which rule matched (the earlier ones did not), the target and the whole
fallback chain. The request is a bare Messages body or a captured `{method, path, headers, body}` (its headers are
used); `--header name:value` adds or replaces one. It goes through `select_route`, exactly as the server routes it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from ccm.cli.check import STDIN, compiled_or_exit
from ccm.compile import split_capture
from ccm.compile.route_tests import caller_of
from ccm.compile.values import BadValue
from ccm.explain import explanation_json, explanation_text, request_facts
from ccm.route import RequestView, select_route
from ccm.table import Standing


def _read_request(source: str) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        raw = sys.stdin.buffer.read() if source == STDIN else Path(source).read_bytes()
        data = orjson.loads(raw)
    except OSError as error:
        raise click.ClickException(f"cannot read {source}: {error.strerror or error.__class__.__name__}") from None
    except orjson.JSONDecodeError as error:
        raise click.ClickException(f"{source} is not valid JSON: {error}") from None
    problems: list[str] = []
    split = split_capture(data, problems.append)
    if split is None:
        raise click.ClickException(f"{source}: {problems[0]}")
    return split


def _parse_caller(text: str) -> Standing:
    try:
        return caller_of(orjson.loads(text))
    except orjson.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON ({error})", param_hint="--caller") from None
    except BadValue as error:
        raise click.BadParameter(error.message + (f" ({error.hint})" if error.hint else ""),
                                 param_hint="--caller") from None


def _parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"`{value}` is not name:value", param_hint="--header")
        headers[name.strip().lower()] = content.strip()
    return headers


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("request", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--header", "header_values", multiple=True, metavar="NAME:VALUE", help="Add or replace a header.")
@click.option("--caller", "caller_json", metavar="JSON",
              help='Who sends it, for `key`/`plan`/`team`/`budget`/`spent` rules: \'{"key": "alice", "plan": "pro", '
                   '"budget": "15%", "spent": {"today": 3}}\'.')
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def explain(file: str, request: str, header_values: tuple[str, ...], caller_json: str | None, output: str) -> None:
    """Show which rule a request matches, why, its target and fallback chain."""
    if file == STDIN and request == STDIN:
        raise click.BadParameter("only one of FILE and REQUEST can be read from stdin", param_hint="REQUEST")
    body, headers = _read_request(request)
    headers.update(_parse_headers(header_values))
    table = compiled_or_exit(file).compiled
    assert table is not None
    caller = _parse_caller(caller_json) if caller_json is not None else None
    decision = select_route(table, body, headers, caller=caller)
    facts = request_facts(table, RequestView(body, headers, None, caller))
    if output == "json":
        click.echo(orjson.dumps(explanation_json(decision, facts), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(explanation_text(decision, facts))
