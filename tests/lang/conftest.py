"""Helpers for the language tests: the CLI runner and a way to compile text in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccm.compile.check import Checked, check

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.ccm"))
ROUTES = REPO / "routes.ccm"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def compile_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Checked]:
    """Check route-file text written to `routes.ccm` in a temporary folder, named relatively in diagnostics."""
    monkeypatch.chdir(tmp_path)

    def run(text: str, environ: dict[str, str] | None = None, run_tests: bool = True) -> Checked:
        Path("routes.ccm").write_text(text)
        return check(Path("routes.ccm"), environ or {}, run_tests=run_tests)

    return run
