"""The forms' text edits: each changes what it names, keeps every comment, and the result passes the one check."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm.compile.check import RouteText, check
from ccm.dsl.format import format_source
from ccm.web import edits
from tests.web.conftest import ROUTES

REPO = Path(__file__).resolve().parents[2]
FILE = "routes.ccm"


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]


def checks(text: str) -> bool:
    return check(RouteText(text, FILE, Path(".")), {"UP_URL": "http://x", "UP_KEY": "k"}).ok


def test_adding_a_provider_keeps_the_file_and_writes_the_key_as_env() -> None:
    out = edits.set_provider(ROUTES, FILE, edits.ProviderForm("deep", "openai", "https://api.deepseek.com/v1",
                                                              "DEEPSEEK_API_KEY"))
    assert 'key  env("DEEPSEEK_API_KEY")' in out and comments(out) == comments(ROUTES) and checks(out)
    assert out.index("provider deep") < out.index("model main")


def test_changing_a_provider_touches_only_its_items() -> None:
    out = edits.set_provider(ROUTES, FILE, edits.ProviderForm("up", "anthropic", 'env("UP_URL")', "OTHER_KEY"))
    assert out == ROUTES.replace('key  env("UP_KEY")\n}\n\n# A provider', 'key  env("OTHER_KEY")\n}\n\n# A provider')


def test_removing_a_provider_takes_its_comment_and_the_check_then_objects() -> None:
    out = edits.remove_provider(ROUTES, FILE, "down")
    assert "provider down" not in out and "nobody listens" not in out
    assert not checks(out)  # `spare` still names it: the check says so before anything is saved


def test_a_model_alias_with_its_prices() -> None:
    classes = {"cache_write_5m": "0.3", "cache_write_1h": "0.5", "cache_read": "0.03", "web_search": "10"}
    out = edits.set_model(ROUTES, FILE, edits.ModelForm("cheap", "up/claude-cheap", "128k", "8k", "0.25", "2",
                                                        **classes))
    assert "model cheap = up/claude-cheap {" in out and checks(out)
    assert ("price      input 0.25 output 2 cache_write_5m 0.3 cache_write_1h 0.5 cache_read 0.03 web_search 10"
            in out)
    changed = edits.set_model(out, FILE, edits.ModelForm("cheap", "up/claude-cheap-2", "128k", "", "0.3", "2",
                                                         **classes))
    assert "max_output" not in changed.split("model cheap")[1] and "input 0.3 output 2" in changed
    assert checks(changed)


def test_a_price_needs_input_and_output() -> None:
    with pytest.raises(edits.EditError, match="both input and output"):
        edits.set_model(ROUTES, FILE, edits.ModelForm("main", "up/claude-main-1", price_input="1"))


def test_rules_are_added_before_default_changed_in_place_and_removed() -> None:
    added = edits.set_rule(ROUTES, FILE, edits.RuleForm("effort >= high", "side"))
    lines = [" ".join(line.split()) for line in added.splitlines()]
    assert lines.index("effort >= high -> side") + 1 == lines.index("default -> main")
    changed = edits.set_rule(ROUTES, FILE, edits.RuleForm("background", "main", index=0))
    assert "background -> main  # cheap work" in changed
    removed = edits.remove_rule(ROUTES, FILE, 0)
    assert "background" not in removed.split("route {")[1].split("}")[0] and checks(removed) is False


def test_fallback_chains() -> None:
    out = edits.set_fallback(ROUTES, FILE, "side", ["main", "spare"])
    assert "fallback side -> main -> spare" in out and checks(out)
    replaced = edits.set_fallback(ROUTES, FILE, "main", ["side"])
    assert "fallback main -> side" in replaced and "main -> spare" not in replaced
    assert "fallback main" not in edits.remove_fallback(ROUTES, FILE, "main")


@pytest.mark.parametrize("form", [
    edits.RuleForm("background\nprovider x { type openai }", "side"),
    edits.RuleForm("background -> main", "side"),
    edits.RuleForm("image", "side\n}"),
    edits.RuleForm("image", "side { }"),
])
def test_a_field_cannot_smuggle_a_statement_into_the_file(form: edits.RuleForm) -> None:
    with pytest.raises(edits.EditError):
        edits.set_rule(ROUTES, FILE, form)


@pytest.mark.parametrize(("field", "value"), [
    ("key", "sk-live-0123456789"), ("key", 'env("A") } provider'), ("url", "javascript:alert(1)"),
    ("url", 'https://x" key "sk'), ("name", "bad name"),
])
def test_provider_fields_are_checked_for_shape(field: str, value: str) -> None:
    values = {"name": "p", "type": "openai", "url": "https://x.example/v1", "key": "P_KEY", field: value}
    with pytest.raises(edits.EditError):
        edits.set_provider(ROUTES, FILE, edits.ProviderForm(**values))


def test_an_unformatted_file_is_left_unformatted_but_the_change() -> None:
    messy = ROUTES.replace("  default    -> main", "  default ->    main")
    assert format_source(messy, FILE) != messy
    out = edits.set_rule(messy, FILE, edits.RuleForm("image", "side"))
    assert "  default ->    main" in out and "  image -> side\n" in out


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.ccm")) + [REPO / "routes.ccm"],
                         ids=lambda p: p.name)
def test_forms_on_the_shipped_files_keep_every_comment(example: Path) -> None:
    text = example.read_text()
    out = edits.set_rule(text, str(example), edits.RuleForm("image", "ccm-new-target/x"))
    out = edits.set_fallback(out, str(example), "ccm-head", ["ccm-tail"])
    assert comments(out) == comments(text)
