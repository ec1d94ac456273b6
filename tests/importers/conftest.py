"""Helpers for the importer tests: run an import, and hold its output to what `ccm check` and `ccm fmt` demand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccm.compile.check import RouteText, check
from ccm.dsl.format import format_source
from ccm.importers import Imported, import_source

FIXTURES = Path(__file__).parent / "fixtures"


def run_import(kind: str, source: Path | str, name: str | None = None) -> Imported:
    """Import a fixture file (a Path) or text (a str, shown as `name`)."""
    if isinstance(source, Path):
        return import_source(kind, source.read_text(encoding="utf-8"), name or str(source))
    return import_source(kind, source, name or "config")


def assert_checks(text: str) -> None:
    """The generated file compiles with no error, its tests pass, and it is already formatted."""
    checked = check(RouteText(text, "routes.ccm", Path(".")), environ={})
    assert checked.ok, "\n\n".join(d.render() for d in checked.problems)
    assert format_source(text, "routes.ccm") == text


def squashed(text: str) -> str:
    """The text with runs of spaces made one, so a test does not depend on the formatter's column alignment."""
    return re.sub(r" {2,}", " ", text)


def warnings_of(imported: Imported) -> str:
    return "\n".join(w.render() for w in imported.warnings)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
