"""`ccm check FILE…`: compile each route file, run its tests, report every problem.

Exit status: 0 when every file is valid (warnings allowed unless `--strict`), 1 when any has errors or a failing
test, 2 for usage errors (click). `-` reads a route file from stdin. `--format json` prints one list of
{file, line, column, severity, message, hint} for CI annotations.
"""

from __future__ import annotations

import atexit
import gc
import sys
from pathlib import Path

import click
import orjson

from ccm.compile import CompileResult, compile_file, compile_source, run_route_tests
from ccm.diagnostics import Diagnostic

STDIN = "-"

# The interpreter's shutdown runs a full collection over every object left (lark, pydantic and click, and each
# checked table, which its router keeps in a cycle), only to free memory the OS is about to take back: ~0.1 s of
# `ccm check` on 2,000 rules. Freezing them from an exit hook, which runs before that clean-up, leaves them out of
# it: cycles left at exit are then not finalized, which no command relies on (output streams are flushed anyway).
# `fmt`, `table` and `explain` import this module too; they are one-shot processes as well.
atexit.register(gc.freeze)

route_files = click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))


def compile_path(file: str, *, with_tests: bool) -> tuple[CompileResult, list[Diagnostic]]:
    """Compile a route file named on the command line (`-`: stdin); with `with_tests`, also run its tests and return
    the failures beside the result."""
    if file == STDIN:
        result = compile_source(sys.stdin.read(), "<stdin>", base_dir=Path.cwd())
    else:
        result = compile_file(Path(file))
    failures = run_route_tests(result.table, result.sources) if with_tests and result.table is not None else []
    return result, failures


def load_table_or_exit(file: str) -> CompileResult:
    """For commands that need a table (`table`, `explain`): compile, print problems, exit 1 when there is none."""
    result, _ = compile_path(file, with_tests=False)
    if result.table is None:
        for diagnostic in result.errors:
            click.echo(diagnostic.render() + "\n", err=True)
        raise SystemExit(1)
    return result


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _summary(file: str, result: CompileResult, failures: list[Diagnostic]) -> str:
    name = "<stdin>" if file == STDIN else file
    warnings = len(result.warnings)
    if result.table is None or failures:
        errors = len(result.errors) + len(failures)
        return f"{name}: {_plural(errors, 'error')}" + (f", {_plural(warnings, 'warning')}" if warnings else "")
    table = result.table
    parts = [
        _plural(len(table.providers), "provider"),
        _plural(len(table.models), "model"),
        _plural(len(table.rules), "rule"),
        f"{_plural(len(table.tests), 'test')} passed",
    ]
    if warnings:
        parts.append(_plural(warnings, "warning"))
    return f"{name}: ok — " + ", ".join(parts)


@click.command()
@route_files
@click.option("--strict", is_flag=True, help="Warnings fail the check too.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: a list of {file, line, column, severity, message, hint}.")
def check(files: tuple[str, ...], strict: bool, output: str) -> None:
    """Compile route files, run their in-file tests and report every problem."""
    failed = False
    reported: list[Diagnostic] = []
    for file in files:
        result, failures = compile_path(file, with_tests=True)
        diagnostics = [*result.diagnostics, *failures]
        reported.extend(diagnostics)
        failed = failed or result.table is None or bool(failures) or (strict and bool(result.warnings))
        if output == "text":
            for diagnostic in diagnostics:
                click.echo(diagnostic.render() + "\n", err=True)
            click.echo(_summary(file, result, failures), err=result.table is None or bool(failures))
    if output == "json":
        click.echo(orjson.dumps([d.to_json() for d in reported], option=orjson.OPT_INDENT_2).decode())
    if failed:
        raise SystemExit(1)
