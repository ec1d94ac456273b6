"""Set-up without noise: `make run` installs what running needs and nothing for the tests, quietly, and the project
builds without setuptools' deprecation warnings (`project.license` as a table printed ~110 lines on every build)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_make_run_installs_only_what_running_needs() -> None:
    planned = subprocess.run(["make", "-n", "-B", "run", "VENV=/nonexistent-venv"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    installs = [line for line in planned.stdout.splitlines() if " pip install" in line]
    assert installs and all(line.rstrip().endswith("-e .") for line in installs), installs
    assert "[test]" not in planned.stdout
    assert all(" -q " in line for line in installs)


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"


@pytest.mark.slow
def test_the_build_prints_no_deprecation_warnings(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    said = built.stdout + built.stderr
    assert "BuildBackendWarning" not in said and "is deprecated" not in said, said
