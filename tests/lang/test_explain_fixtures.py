"""`ccm explain` on every captured Claude Code request against the shipped routes.ccm: each scenario lands where
the file says (web search, subagent, background, the user's model choice, the default)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ccm.cli.main import main
from tests.conftest import FIXTURES, fixture_names
from tests.lang.conftest import ROUTES

EXPECTED = {
    "web-search-server-tool.json": ("sonnet", "websearch"),
    "subagent-request.json": ("sonnet", "subagent"),
    "model-haiku.json": ("haiku", "background"),
    "model-sonnet.json": ("sonnet", 'model ~ "claude-sonnet-*"'),
    "print-mode-first-turn.json": ("opus", "default"),
    "interactive-first-turn.json": ("opus", "default"),
    "agent-tool-call.json": ("opus", "default"),
    "bash-tool-call-turn1.json": ("opus", "default"),
    "bash-tool-result-turn2.json": ("opus", "default"),
    "image-tool-result.json": ("opus", "default"),
    "read-image-turn1.json": ("opus", "default"),
    "toolsearch-turn1.json": ("opus", "default"),
    "count-tokens-context-a.json": ("opus", "default"),
    "count-tokens-context-b.json": ("opus", "default"),
}


def test_every_fixture_has_an_expectation() -> None:
    assert set(fixture_names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_explain_routes_each_fixture(name: str) -> None:
    result = CliRunner().invoke(main, ["explain", "--format", "json", str(ROUTES), str(FIXTURES / name)])
    assert result.exit_code == 0, result.output
    explained = json.loads(result.stdout)
    target, rule = EXPECTED[name]
    assert (explained["target"]["name"], explained["rule"]["source"]) == (target, rule)
    assert explained["chain"][0] == target and len(explained["chain"]) == 2
