"""The README's first route file is real: it compiles, its test passes, it is formatted, and the error the README
shows for a typo is the one `ccm check` prints."""

from __future__ import annotations

import re

from ccm.compile import compile_source
from ccm.compile.route_tests import run_route_tests
from ccm.dsl.format import format_source
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
FIRST_FILE = re.search(r"```\n(# routes\.ccm\n.*?)```", README, re.S).group(1)  # type: ignore[union-attr]


def test_the_first_route_file_compiles_passes_its_tests_and_is_formatted() -> None:
    result = compile_source(FIRST_FILE, "routes.ccm", environ={"ANTHROPIC_API_KEY": "k", "DEEPSEEK_API_KEY": "k"})
    assert result.table is not None and result.diagnostics == []
    assert run_route_tests(result.table) == []
    assert format_source(FIRST_FILE, "routes.ccm") == FIRST_FILE


def test_the_typo_error_shown_is_the_one_printed() -> None:
    broken = FIRST_FILE.replace("subagent        -> coder", "subagent        -> codr")
    (error,) = compile_source(broken, "routes.ccm", environ={"ANTHROPIC_API_KEY": "k", "DEEPSEEK_API_KEY": "k"}).errors
    shown = re.search(r"```\n(routes\.ccm:\d+:\d+: error: .*?)\n```", README, re.S).group(1)  # type: ignore[union-attr]
    assert error.render() == shown
