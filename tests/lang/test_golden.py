"""Golden files: valid route files → the table as JSON; invalid ones → the diagnostics exactly as `ccm check` prints
them, carets included. `CCM_UPDATE_GOLDEN=1` rewrites the expectations (review the diff before committing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ccm.compile.check import check
from ccm.diagnostics import render_all

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CCM_UPDATE_GOLDEN") == "1"
# Fixed so the expectations do not depend on the machine: only this variable is "set".
ENVIRON = {"ANTHROPIC_API_KEY": "sk-ant-never-shown"}


def _cases(kind: str) -> list[str]:
    return sorted(p.name for p in (GOLDEN / kind).glob("*.ccm"))


def _compare(actual: str, expected_file: Path) -> None:
    if UPDATE:
        expected_file.write_text(actual)
    assert expected_file.exists(), f"no golden file {expected_file.name}: run with CCM_UPDATE_GOLDEN=1 and review"
    assert actual == expected_file.read_text()


@pytest.mark.parametrize("name", _cases("valid"))
def test_valid_file_compiles_to_golden_table(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN / "valid")
    result = check(Path(name), ENVIRON)
    assert result.problems == (), render_all(result.problems)
    assert result.table is not None
    table = json.loads(result.table.model_dump_json())
    _compare(json.dumps(table, indent=2, sort_keys=False) + "\n", GOLDEN / "valid" / name.replace(".ccm", ".json"))


@pytest.mark.parametrize("name", _cases("invalid"))
def test_invalid_file_reports_golden_diagnostics(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN / "invalid")
    result = check(Path(name), ENVIRON)
    assert result.reported, "a golden 'invalid' case must report something"
    _compare(render_all(result.reported) + "\n", GOLDEN / "invalid" / name.replace(".ccm", ".txt"))


def test_secrets_never_reach_the_table() -> None:
    text = (GOLDEN / "valid" / "full.json").read_text()
    assert "sk-ant-never-shown" not in text
    assert '"env(ANTHROPIC_API_KEY)"' in text
