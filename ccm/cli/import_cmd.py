"""`ccm import FORMAT FILE`: another router's config → a formatted routes.ccm, checked before it is written.

    ccm import ccr ~/.claude-code-router/config.json -o routes.ccm
    ccm import litellm config.yaml
    ccm import ccm-toml ~/.claude-code-mux/config.toml

The file goes to stdout, or to `-o FILE` (an existing file only with `--force`). What could not be carried over is
printed on stderr as `file:line: warning: …` and heads the generated file as comments. A malformed source prints
`file:line: error: …` and exits 1 with nothing written. The output is compiled and its tests run before it leaves:
a file `ccm check` would reject is never written.
"""

from __future__ import annotations

from pathlib import Path

import click

from ccm.compile.check import RouteText, check
from ccm.importers import FORMATS, Imported, ImportFailed, import_source


@click.command(name="import")
@click.argument("kind", metavar="FORMAT", type=click.Choice(sorted(FORMATS)))
@click.argument("source", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the route file here (default: stdout).")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def import_(kind: str, source: str, output: str | None, force: bool) -> None:
    """Translate a claude-code-router (ccr), LiteLLM (litellm) or claude-code-mux (ccm-toml) config into a route
    file, with tests that pin the old routing."""
    if output is not None and Path(output).exists() and not force:
        raise click.ClickException(f"{output} exists; pass --force to overwrite it")
    try:
        text = Path(source).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        what, usual_place, _ = FORMATS[kind]
        reason = "not found" if isinstance(error, FileNotFoundError) else error.__class__.__name__
        click.echo(f"{source}:1: error: cannot read the {what} config: {reason} (it usually is {usual_place})",
                   err=True)
        raise SystemExit(1) from None
    out_name = output or "routes.ccm"
    try:
        imported = import_source(kind, text, source, Path(out_name).name)
    except ImportFailed as failed:
        for problem in failed.problems:
            click.echo(problem.render(), err=True)
        errors = sum(p.severity == "error" for p in failed.problems)
        click.echo(f"{source}: not imported: {errors} error{'s' if errors != 1 else ''}", err=True)
        raise SystemExit(1) from None
    _verify(imported, out_name)
    for warning in imported.warnings:
        click.echo(warning.render(), err=True)
    if output is None:
        click.echo(imported.text, nl=False)
    else:
        Path(output).write_text(imported.text, encoding="utf-8")
    plan = imported.plan
    counts = ", ".join(_plural(len(items), noun) for items, noun in (
        (plan.providers, "provider"), (plan.models, "model"), (plan.rules, "rule"), (plan.tests, "test")))
    click.echo(f"{source} → {output or 'stdout'}: {counts}; {_plural(len(imported.warnings), 'warning')}"
               + ("" if output is None else f" (check it: ccm check {output})"), err=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _verify(imported: Imported, name: str) -> None:
    """The generated file must compile and pass its own tests; if not, that is a bug here, and nothing is written."""
    checked = check(RouteText(imported.text, name, Path.cwd()))
    if not checked.ok:
        for diagnostic in checked.problems:
            click.echo(diagnostic.render() + "\n", err=True)
        click.echo("error: the generated route file does not pass `ccm check` (a bug in `ccm import`); nothing was "
                   "written", err=True)
        raise SystemExit(1)
