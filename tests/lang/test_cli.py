"""`ccm check`, `fmt`, `table`, `explain` through click's CliRunner: exit codes, output formats, stdin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccm.cli.main import main
from tests.lang.conftest import ROUTES

GOLDEN = Path(__file__).parent / "golden"
BROKEN = GOLDEN / "invalid" / "unknown-names.ccm"
WARNS = GOLDEN / "invalid" / "warnings.ccm"


def test_check_ok_prints_a_summary(runner: CliRunner) -> None:
    result = runner.invoke(main, ["check", str(ROUTES)], env={"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{ROUTES}: ok — 2 providers, 5 models, 9 rules, 9 tests passed"


def test_check_errors_exit_1_with_carets(runner: CliRunner) -> None:
    result = runner.invoke(main, ["check", str(BROKEN)])
    assert result.exit_code == 1
    assert "error: unknown model `codr`" in result.stderr
    assert "hint: did you mean `coder`?" in result.stderr
    assert result.stderr.rstrip().endswith("4 errors")


def test_warnings_fail_only_with_strict(runner: CliRunner) -> None:
    assert runner.invoke(main, ["check", str(WARNS)]).exit_code == 0
    assert runner.invoke(main, ["check", "--strict", str(WARNS)]).exit_code == 1


def test_usage_errors_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(main, ["check"]).exit_code == 2
    assert runner.invoke(main, ["check", "--format", "xml", str(ROUTES)]).exit_code == 2


def test_missing_file_is_an_error_not_a_traceback(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["check", str(tmp_path / "nope.ccm")])
    assert result.exit_code == 1
    assert "cannot read route file: not found" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_json_lists_every_diagnostic(runner: CliRunner) -> None:
    result = runner.invoke(main, ["check", "--format", "json", str(BROKEN), str(WARNS)])
    assert result.exit_code == 1
    reported = json.loads(result.stdout)
    assert {d["severity"] for d in reported} == {"error", "warning"}
    first = reported[0]
    assert set(first) == {"file", "line", "column", "severity", "message", "hint"}
    assert (first["line"], first["column"]) == (7, 14)


def test_check_reads_stdin(runner: CliRunner) -> None:
    text = 'provider p {\n  type openai\n  url "http://x"\n}\nroute {\n  default -> p/x\n}\n'
    result = runner.invoke(main, ["check", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<stdin>: ok — 1 provider, 1 model, 2 rules, 0 tests passed")
    broken = runner.invoke(main, ["check", "-"], input="route {\n  thinkin -> p/x\n}\n")
    assert broken.exit_code == 1 and "<stdin>:2:3: error" in broken.stderr


def test_table_shows_env_references_not_values(runner: CliRunner) -> None:
    result = runner.invoke(main, ["table", str(ROUTES)], env={"ANTHROPIC_API_KEY": "sk-ant-secret-value"})
    assert result.exit_code == 0
    table = json.loads(result.stdout)
    assert table["providers"]["anthropic"]["key"] == "env(ANTHROPIC_API_KEY)"
    assert "sk-ant-secret-value" not in result.output


def test_table_on_a_broken_file_exits_1(runner: CliRunner) -> None:
    result = runner.invoke(main, ["table", str(BROKEN)])
    assert result.exit_code == 1 and "unknown model `codr`" in result.stderr


def test_fmt_check_reports_a_diff_and_fmt_rewrites(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "r.ccm"
    path.write_text('provider p {  type openai\n url "http://x" }\nroute { default   ->   p/x }   # the rule\n')
    checked = runner.invoke(main, ["fmt", "--check", str(path)])
    assert checked.exit_code == 1 and "+route {" in checked.stdout
    assert runner.invoke(main, ["fmt", str(path)]).exit_code == 0
    assert path.read_text() == (
        'provider p {\n  type openai\n  url  "http://x"\n}\nroute {  # the rule\n  default -> p/x\n}\n'
    )
    assert runner.invoke(main, ["fmt", "--check", str(path)]).exit_code == 0


def test_fmt_stdin_prints(runner: CliRunner) -> None:
    result = runner.invoke(main, ["fmt", "-"], input="route{\ndefault->p/x\n}")
    assert result.exit_code == 0 and result.stdout == "route {\n  default -> p/x\n}\n"


def test_fmt_refuses_a_file_that_does_not_parse(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "r.ccm"
    path.write_text("route {\n  default p/x\n}\n")
    result = runner.invoke(main, ["fmt", str(path)])
    assert result.exit_code == 1 and "the `->` is missing" in result.stderr
    assert path.read_text() == "route {\n  default p/x\n}\n"


def test_fmt_reports_a_file_that_is_not_utf8_without_a_traceback(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "r.ccm"
    path.write_bytes(b"route {\n  default -> p/\xff\n}\n")
    result = runner.invoke(main, ["fmt", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a clean exit, no traceback
    assert "cannot read route file: UnicodeDecodeError" in result.stderr


def test_explain_text_and_json(runner: CliRunner, tmp_path: Path) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"model": "claude-haiku-5-5", "max_tokens": 10, "messages": []}))
    text = runner.invoke(main, ["explain", str(ROUTES), str(request)])
    assert text.exit_code == 0, text.output
    assert "matched   rule 3 `background`" in text.stdout
    assert "target    haiku = anthropic/claude-haiku-5-5" in text.stdout
    assert "fallback  sonnet = anthropic/claude-sonnet-5-5" in text.stdout
    as_json = json.loads(runner.invoke(main, ["explain", "--format", "json", str(ROUTES), str(request)]).stdout)
    assert as_json["chain"] == ["haiku", "sonnet"] and as_json["rule"]["source"] == "background"


def test_explain_header_option_and_stdin(runner: CliRunner) -> None:
    body = json.dumps({"model": "claude-opus-5-5", "max_tokens": 10, "messages": []})
    result = runner.invoke(main, ["explain", "--header", "X-CCM-Route: gpt", "--format", "json", str(ROUTES), "-"],
                           input=body)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["target"]["name"] == "gpt"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not valid JSON"), ('{"messages": []}', "a request is a Messages body")],
)
def test_explain_bad_request_is_a_clear_error(runner: CliRunner, tmp_path: Path, content: str, message: str) -> None:
    request = tmp_path / "req.json"
    request.write_text(content)
    result = runner.invoke(main, ["explain", str(ROUTES), str(request)])
    assert result.exit_code == 1 and message in result.stderr
