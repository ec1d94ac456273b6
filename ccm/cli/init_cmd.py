"""`ccm init [PATH]`: write the commented starter route file (with its tests) where every folder finds it."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ccm.cli.route_file import user_routes, write_starter


@click.command("init")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace a file that is already there.")
def init(path: str | None, force: bool) -> None:
    """Write a starter route file to PATH [default: ${XDG_CONFIG_HOME:-~/.config}/ccm/routes.ccm], the file
    `ccm run`, `ccm code` and `ccm env` use from any folder that has no routes.ccm of its own."""
    target = Path(path) if path else user_routes(os.environ)
    write_starter(target, force)
    click.echo(f"wrote {target}: everything goes to Anthropic until you point its rules elsewhere; "
               f"`ccm check {target}` runs its tests")
