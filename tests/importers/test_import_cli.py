"""`ccm import` on the command line: where the file goes, what is printed where, and when nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccm.cli.main import main
from tests.importers.conftest import FIXTURES, assert_checks

README = FIXTURES / "ccr" / "readme-example.json"


def test_stdout_by_default_with_warnings_on_stderr(runner: CliRunner) -> None:
    result = runner.invoke(main, ["import", "ccr", str(README)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# Imported from claude-code-router's")
    assert_checks(result.stdout)
    assert f"{README}:2: warning: APIKEY" in result.stderr
    assert result.stderr.splitlines()[-1].endswith("8 providers, 17 models, 6 rules, 9 tests; 12 warnings")
    assert "your-secret-key" not in result.output and "sk-xxx" not in result.output


def test_output_file_and_force(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "routes.ccm"
    first = runner.invoke(main, ["import", "litellm", str(FIXTURES / "litellm" / "claude-code-quickstart.yaml"),
                                 "-o", str(out)])
    assert first.exit_code == 0, first.stderr
    assert first.stdout == ""
    assert_checks(out.read_text())
    assert f"check it: ccm check {out}" in first.stderr
    out.write_text("# mine\n")
    refused = runner.invoke(main, ["import", "ccm-toml", str(FIXTURES / "mux" / "default.example.toml"),
                                   "-o", str(out)])
    assert refused.exit_code == 1
    assert "exists; pass --force" in refused.stderr
    assert out.read_text() == "# mine\n"
    forced = runner.invoke(main, ["import", "ccm-toml", str(FIXTURES / "mux" / "default.example.toml"),
                                  "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert "claude-code-mux" in out.read_text()


def test_malformed_source_exits_1_and_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "config.json"
    source.write_text('{\n  "Providers": [],\n  "Router": {"default": "ghost,model"}\n}\n')
    out = tmp_path / "routes.ccm"
    result = runner.invoke(main, ["import", "ccr", str(source), "-o", str(out)])
    assert result.exit_code == 1
    assert f"{source}:3: error: `Router.default` names provider `ghost`" in result.stderr
    assert result.stderr.rstrip().endswith("not imported: 1 error")
    assert not out.exists()


def test_missing_file_and_unknown_format(runner: CliRunner, tmp_path: Path) -> None:
    missing = runner.invoke(main, ["import", "ccr", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1
    assert "nope.json:1: error: cannot read the claude-code-router config: not found" in missing.stderr
    unknown = runner.invoke(main, ["import", "bifrost", str(README)])
    assert unknown.exit_code == 2
    assert "'bifrost' is not one of" in unknown.stderr


def test_a_generated_file_that_fails_its_check_is_not_written(runner: CliRunner, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ccm.importers import writer

    monkeypatch.setattr(writer, "write_route_file", lambda plan, name: "route {\n  default -> nowhere\n}\n")
    out = tmp_path / "routes.ccm"
    result = runner.invoke(main, ["import", "ccr", str(README), "-o", str(out)])
    assert result.exit_code == 1
    assert "unknown model `nowhere`" in result.stderr and "a bug in `ccm import`" in result.stderr
    assert not out.exists()


def test_real_process_then_check_and_fmt(tmp_path: Path) -> None:
    ccm = [str(Path(sys.executable).parent / "ccm")]  # the installed entry point, as a user runs it
    out = tmp_path / "routes.ccm"
    made = subprocess.run([*ccm, "import", "ccr", str(FIXTURES / "ccr" / "fallback-json5.json"), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    checked = subprocess.run([*ccm, "check", str(out)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "tests passed" in checked.stdout
    formatted = subprocess.run([*ccm, "fmt", "--check", str(out)], capture_output=True, text=True, timeout=60)
    assert formatted.returncode == 0, formatted.stdout
