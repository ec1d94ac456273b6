"""The shipped routes.ccm and every example compile without errors, their own tests pass, and they are formatted."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm.compile import compile_file
from ccm.compile.route_tests import run_route_tests
from ccm.diagnostics import render_all
from ccm.dsl.format import format_source
from tests.lang.conftest import EXAMPLES, ROUTES

FILES = [ROUTES, *EXAMPLES]
EXPECTED_EXAMPLES = {
    "openai-compatible.ccm", "anthropic.ccm", "mixed.ccm", "fallback.ccm", "gemini.ccm", "responses.ccm",
    "deepseek-thinking.ccm",
}


def test_every_promised_example_exists() -> None:
    assert {p.name for p in EXAMPLES} >= EXPECTED_EXAMPLES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_compiles_and_its_tests_pass(path: Path) -> None:
    # No variable set: a fresh machine. Unset keys may only warn.
    result = compile_file(path, {})
    assert result.errors == [], render_all(result.errors)
    assert result.table is not None and result.table.tests, "every shipped file carries tests"
    failures = run_route_tests(result.table, result.sources)
    assert failures == [], render_all(failures)
    assert all(w.message.startswith("environment variable") for w in result.warnings), render_all(result.warnings)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_is_formatted_and_formatting_is_idempotent(path: Path) -> None:
    text = path.read_text()
    formatted = format_source(text, path.name)
    assert formatted == text, f"run `ccm fmt {path.name}`"
    assert format_source(formatted, path.name) == formatted


def test_shipped_routes_do_not_depend_on_files_beside_them() -> None:
    assert "request file" not in ROUTES.read_text()
