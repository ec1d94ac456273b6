"""Which route file a command serves when none is named, so that one file serves every project folder.

    find_route_file(given, environ)   the argument, else $CCM_ROUTES, else ./routes.ccm, else
                                      ${XDG_CONFIG_HOME:-~/.config}/ccm/routes.ccm (`user_routes`)
    starter_text()                    the commented starter file `ccm init` writes there, with its tests

A file that is named (the argument, or $CCM_ROUTES) must exist: naming one is never a request to look elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import overload

import click

ROUTES_VARIABLE = "CCM_ROUTES"
FILE_NAME = "routes.ccm"


def user_routes(environ: Mapping[str, str]) -> Path:
    config = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "ccm" / FILE_NAME


@overload
def find_route_file(given: str | None, environ: Mapping[str, str]) -> Path: ...
@overload
def find_route_file(given: str | None, environ: Mapping[str, str], required: bool) -> Path | None: ...


def find_route_file(given: str | None, environ: Mapping[str, str], required: bool = True) -> Path | None:
    """The route file to use, or a ClickException saying where ccm looked (None instead when not `required` and
    nothing was named)."""
    if given:
        return _existing(Path(given), "")
    named = environ.get(ROUTES_VARIABLE)
    if named:
        return _existing(Path(named), f" (named by ${ROUTES_VARIABLE})")
    here, mine = Path(FILE_NAME), user_routes(environ)
    for candidate in (here, mine):
        if candidate.is_file():
            return candidate
    if not required:
        return None
    raise click.ClickException(
        f"no route file: none was named, ${ROUTES_VARIABLE} is not set, and neither ./{FILE_NAME} nor {mine} "
        "exists; `ccm init` writes a starter file there")


def starter_text() -> str:
    """The repository's own routes.ccm (everything to Anthropic, the scenarios as rules, in-file tests), as the
    package ships it."""
    return (resources.files("ccm.cli") / "starter.ccm").read_text(encoding="utf-8")


def _existing(path: Path, why: str) -> Path:
    if not path.is_file():
        raise click.ClickException(f"route file not found: {path}{why}")
    return path


def write_starter(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; `ccm init --force` replaces it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(starter_text(), encoding="utf-8")
    temporary.replace(path)
