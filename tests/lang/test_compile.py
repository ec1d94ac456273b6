"""What the compiler means by each construct, beyond the golden files: implicit `direct`, literal targets, values
with suffixes, environment handling, include resolution and the in-file test runner's report."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from ccm import table as t
from ccm.compile import compile_source, values
from ccm.compile.check import Checked
from ccm.compile.route_tests import run_route_tests

Compile = Callable[..., Checked]

PROVIDER = 'provider p {\n  type openai\n  url "http://127.0.0.1:1/v1"\n  key env("P_KEY")\n}\n'


def test_implicit_direct_rule_comes_first(compile_text: Compile) -> None:
    result = compile_text(PROVIDER + "model m = p/m\nroute {\n  background -> m\n  default -> p/other\n}\n")
    assert result.table is not None
    first = result.table.rules[0]
    assert first == t.Rule(condition=t.Direct(), target=None, source="direct")
    assert [r.source for r in result.table.rules] == ["direct", "background", "default"]


def test_direct_off_and_explicit_direct_placement(compile_text: Compile) -> None:
    off = compile_text("settings { direct off }\n" + PROVIDER + "route {\n  default -> p/x\n}\n")
    assert off.table is not None and [r.source for r in off.table.rules] == ["default"]
    placed = compile_text(PROVIDER + "route {\n  background -> p/a\n  direct\n  default -> p/x\n}\n")
    assert placed.table is not None
    assert [r.source for r in placed.table.rules] == ["background", "direct", "default"]
    assert placed.table.rules[1].span is not None and placed.table.rules[1].span.line == 8


def test_literal_targets_become_undeclared_models(compile_text: Compile) -> None:
    result = compile_text(PROVIDER + "route {\n  default -> p/vendor/model:free\n}\n"
                                     "fallback p/vendor/model:free -> p/b\n")
    assert result.table is not None
    literal = result.table.models["p/vendor/model:free"]
    assert (literal.provider, literal.model, literal.declared) == ("p", "vendor/model:free", False)
    assert result.table.fallbacks == {"p/vendor/model:free": ("p/b",)}


def test_unset_variable_warns_once_and_set_variable_is_silent(compile_text: Compile) -> None:
    text = PROVIDER + ('provider q {\n  type openai\n  url "http://x"\n  key env("P_KEY")\n}\n'
                       'route {\n  default -> p/x\n}\n')
    unset = compile_text(text, {})
    assert [w.message for w in unset.warnings] == ["environment variable `P_KEY` is not set"]
    assert unset.table is not None
    assert compile_text(text, {"P_KEY": "secret"}).warnings == ()


def test_environment_values_never_enter_the_table(compile_text: Compile) -> None:
    result = compile_text(PROVIDER + "route {\n  default -> p/x\n}\n", {"P_KEY": "sk-very-secret"})
    assert result.table is not None
    assert "sk-very-secret" not in result.table.model_dump_json()
    assert result.table.providers["p"].key == t.EnvRef(name="P_KEY")


def test_version_changes_with_any_source_byte(compile_text: Compile) -> None:
    base = PROVIDER + "route {\n  default -> p/x\n}\n"
    first = compile_text(base).table
    second = compile_text(base + "# a comment\n").table
    assert first is not None and second is not None
    assert first.version != second.version and len(first.version) == 12


def test_includes_resolve_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "providers.ccm").write_text(PROVIDER)
    main = tmp_path / "conf" / "main.ccm"
    main.write_text('include "providers.ccm"\nroute {\n  default -> p/x\n}\n')
    from ccm.compile import compile_file

    result = compile_file(main, {"P_KEY": "k"})
    assert result.table is not None
    assert result.table.sources == (str(main), str(tmp_path / "conf" / "providers.ccm"))


def test_stdin_source_compiles_with_a_base_folder(tmp_path: Path) -> None:
    (tmp_path / "p.ccm").write_text(PROVIDER)
    result = compile_source('include "p.ccm"\nroute {\n  default -> p/x\n}\n', "<stdin>", {}, base_dir=tmp_path)
    assert result.table is not None and result.table.sources[0] == "<stdin>"


def test_failing_test_names_the_rule_that_matched(compile_text: Compile) -> None:
    text = PROVIDER + (
        "model cheap = p/cheap\nroute {\n  background -> cheap\n  default -> p/main\n}\n"
        'test "x" {\n  request { model: "claude-haiku-5-5" }\n  expect p/main\n}\n'
    )
    result = compile_text(text, run_tests=False)
    assert result.table is not None
    (failure,) = run_route_tests(result.table, result.sources)
    assert failure.message == 'test "x": expected p/main, got cheap (rule 2 `background` at routes.ccm:8:3)'
    assert failure.render().splitlines()[1:] == ['   11 | test "x" {', "      |      ^^^"]


def test_tokens_stand_in_means_no_tokenizer(compile_text: Compile, monkeypatch: pytest.MonkeyPatch) -> None:
    import ccm.tokens

    def refuse(body: object) -> int:
        raise AssertionError("the tokenizer must not run when a test gives `tokens`")

    monkeypatch.setattr(ccm.tokens, "count_request_tokens", refuse)
    text = PROVIDER + (
        "route {\n  tokens > 100k -> p/long\n  default -> p/main\n}\n"
        'test "long" {\n  request { model: "m" }\n  tokens 150k\n  expect p/long\n}\n'
    )
    result = compile_text(text)
    assert result.errors == () and result.table is not None
    assert result.table.tests[0].request["messages"] == [{"role": "user", "content": "hi"}]
    assert result.table.tests[0].request["max_tokens"] == 1024


def test_expecting_a_literal_is_met_by_its_alias(compile_text: Compile) -> None:
    text = PROVIDER + ('model m = p/m\nroute {\n  default -> m\n}\n'
                       'test "x" {\n  request { model: "x" }\n  expect p/m\n}\n')
    assert compile_text(text).errors == ()


def test_fixture_shaped_request_files_bring_their_headers(compile_text: Compile, tmp_path: Path) -> None:
    (tmp_path / "req.json").write_text(
        '{"method": "POST", "path": "/v1/messages", "headers": {"X-Team": "infra"}, "body": {"model": "m"}}'
    )
    text = PROVIDER + (
        'route {\n  header "x-team" == "infra" -> p/infra\n  default -> p/main\n}\n'
        'test "x" {\n  request file "req.json"\n  expect p/infra\n}\n'
    )
    result = compile_text(text)
    assert result.errors == ()
    assert result.table is not None and dict(result.table.tests[0].headers) == {"x-team": "infra"}


@pytest.mark.parametrize(
    ("text", "expected"), [("128k", 128_000), ("1m", 1_000_000), ("1.5m", 1_500_000), ("4096", 4096)]
)
def test_token_counts(text: str, expected: int) -> None:
    assert values.token_count(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("32mb", 32 * 1024**2), ("512kb", 512 * 1024), ("1gb", 1024**3)])
def test_sizes(text: str, expected: int) -> None:
    assert values.size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("500ms", 0.5), ("8s", 8.0), ("2m", 120.0), ("1h", 3600.0)])
def test_durations(text: str, expected: float) -> None:
    assert values.duration(text) == expected


@pytest.mark.parametrize("glob", ["[]]x", "[!]]", "a[bc]*", "*haiku*", "exact"])
def test_well_formed_globs(glob: str) -> None:
    values.check_glob(glob)


@pytest.mark.parametrize("glob", ["", "claude-[haiku", "[!"])
def test_malformed_globs(glob: str) -> None:
    with pytest.raises(values.BadValue):
        values.check_glob(glob)


def test_a_plans_and_teams_budget_and_rate_limits(compile_text: Compile) -> None:
    result = compile_text(PROVIDER + "model m = p/m\n"
                                     "plan trial {\n  models m\n  budget $20.50 per month\n  rpm 60\n  tpm 400k\n}\n"
                                     "team web {\n  budget $0.25 per day\n}\n"
                                     "route {\n  default -> m\n}\n")
    assert result.table is not None and result.errors == ()
    trial, web = result.table.plans["trial"], result.table.teams["web"]
    assert (trial.kind, trial.budget, trial.period, trial.rpm, trial.tpm) == ("plan", Decimal("20.5"), "month", 60,
                                                                              400_000)
    assert (web.kind, web.budget, web.period, web.rpm, web.tpm) == ("team", Decimal("0.25"), "day", None, None)
    assert result.table.policies_of("trial", "web") == (trial, web)  # the plan's first: it wins over the team's


@pytest.mark.parametrize(("text", "says"), [
    ("$0.0000000001", "more than nine decimals"),
    ("$99999999", "too large"),
])
def test_a_budget_is_an_amount_the_ledger_can_count(text: str, says: str) -> None:
    with pytest.raises(values.BadValue, match=says):
        values.budget(text)
