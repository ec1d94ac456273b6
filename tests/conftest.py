"""Shared test helpers. Suites keep their own fixtures in their folder's conftest.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The captured Claude Code requests live beside the checkout (CI clones main with ../shared next to it).
FIXTURES = REPO.parent / "shared" / "fixtures" / "claude-code-2.1.328"


def pytest_configure(config: pytest.Config) -> None:
    # without them every golden test would be collected with an empty parameter set: skipped, not failed
    if not any(FIXTURES.glob("*.json")):
        raise pytest.UsageError(f"the captured Claude Code requests are missing: {FIXTURES} "
                                "(the tests expect ../shared beside the checkout)")


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict[str, Any]:
    """A captured request: {method, path, headers, body}."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"captured requests not found at {FIXTURES}"
    return FIXTURES
