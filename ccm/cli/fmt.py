"""`ccm fmt FILE…`: rewrite route files in canonical form (comments kept, idempotent).

`--check` rewrites nothing: it prints a diff for each file that is not formatted and exits 1. `-` reads stdin and
prints the result. A file that does not parse is reported like `ccm check` reports it, and left alone (exit 1).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import click

from ccm.cli.check import STDIN
from ccm.dsl import RouteSyntaxError
from ccm.dsl.format import FormatError, format_source


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True, exists=True))
@click.option("--check", "check_only", is_flag=True,
              help="Change nothing; exit 1 and show a diff if a file is not formatted.")
def fmt(files: tuple[str, ...], check_only: bool) -> None:
    """Format route files canonically."""
    failed = False
    for file in files:
        name = "<stdin>" if file == STDIN else file
        try:
            text = sys.stdin.read() if file == STDIN else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            click.echo(f"{name}:1:1: error: cannot read route file: {error.__class__.__name__}", err=True)
            failed = True
            continue
        try:
            formatted = format_source(text, name)
        except RouteSyntaxError as error:
            click.echo(error.diagnostic.render() + "\n", err=True)
            failed = True
            continue
        except FormatError as error:
            click.echo(f"error: {error}", err=True)
            failed = True
            continue
        if check_only:
            if formatted != text:
                diff = difflib.unified_diff(text.splitlines(True), formatted.splitlines(True), name,
                                            f"{name} (formatted)")
                click.echo("".join(diff), nl=False)
                failed = True
        elif file == STDIN:
            click.echo(formatted, nl=False)
        elif formatted != text:
            Path(file).write_text(formatted, encoding="utf-8")
            click.echo(f"formatted {name}", err=True)
    if failed:
        raise SystemExit(1)
