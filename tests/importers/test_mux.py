"""`ccm import ccm-toml`: claude-code-mux configs → route files: prioritised mappings, its router order, its regexes."""

from __future__ import annotations

import pytest

from ccm.compile import compile_source
from ccm.importers import ImportFailed
from ccm.importers.mux import regex_glob
from ccm.route import select_route
from tests.importers.conftest import FIXTURES, assert_checks, run_import, squashed, warnings_of

MUX = FIXTURES / "mux"


@pytest.mark.parametrize("name", ["default.example.toml", "claude-max-oauth.example.toml"])
def test_documented_examples_import_and_check(name: str) -> None:
    imported = run_import("ccm-toml", MUX / name)
    assert_checks(imported.text)
    assert "your-" not in imported.text  # the examples' placeholder keys


def test_default_example() -> None:
    imported = run_import("ccm-toml", MUX / "default.example.toml")
    text = squashed(imported.text)
    # mappings in priority order: the first serves, the next answers when it fails
    assert "model glm-4-6 = zai-coding-plan/glm-4.6" in text
    assert "fallback glm-4-6 -> openrouter/z-ai/glm-4.6" in text
    assert 'url "https://api.z.ai/api/anthropic"' in text and "type anthropic" in text
    assert 'url "https://api.kimi.com/coding"' in text  # base_url's trailing slash dropped
    assert "timeout connect 10s total 10m" in text
    assert 'background "*claude*haiku*"' in text
    rules = text[text.index("route {"):text.index("}", text.index("route {"))]
    order = ["websearch -> glm-4-6", "direct", 'model == "glm-4.6" -> glm-4-6', "thinking -> kimi-for-coding",
             "background -> glm-4-5-air", "default -> glm-4-6"]
    assert [rules.index(rule) for rule in order] == sorted(rules.index(rule) for rule in order)
    report = warnings_of(imported)
    assert "provider `zai-coding-plan`: its key was written in the file" in report
    assert "router.think: claude-code-mux took only `thinking.type: enabled`" in report
    table = compile_source(imported.text, "routes.ccm", environ={}).table
    assert table is not None
    assert select_route(table, {"model": "glm-4.5-air"}).target.name == "glm-4-5-air"


def test_oauth_provider_is_reported() -> None:
    imported = run_import("ccm-toml", MUX / "claude-max-oauth.example.toml")
    assert "OAuth logins are not carried over" in warnings_of(imported)
    assert 'env("CLAUDE_MAX_API_KEY")' in imported.text


def test_priorities_sort_and_disabled_providers_are_skipped() -> None:
    config = """[router]
default = "m"
background = "m"
auto_map_regex = "^claude-(opus|sonnet)"
background_regex = "haiku$"

[[providers]]
name = "a"
provider_type = "openai"
base_url = "https://a.example/v1"
api_key = "$A_KEY"
models = []

[[providers]]
name = "b"
provider_type = "groq"
api_key = "$B_KEY"
models = []

[[providers]]
name = "off"
provider_type = "openai"
api_key = "$OFF_KEY"
enabled = false
models = []

[[models]]
name = "m"
[[models.mappings]]
priority = 3
provider = "a"
actual_model = "third"
[[models.mappings]]
priority = 1
provider = "b"
actual_model = "first"
[[models.mappings]]
priority = 2
provider = "off"
actual_model = "never"
"""
    imported = run_import("ccm-toml", config, "config.toml")
    text = squashed(imported.text)
    assert "model m = b/first" in text and "fallback m -> a/third" in text
    assert 'url "https://api.groq.com/openai/v1"' in text  # mux's preset ignores base_url for groq
    assert 'url "https://a.example/v1"' in text
    report = warnings_of(imported)
    assert "provider `off` is disabled" in report
    assert "router.auto_map_regex `^claude-(opus|sonnet)` is more than a glob can say" in report
    assert 'background "*haiku"' in text
    assert_checks(imported.text)


@pytest.mark.parametrize(("regex", "glob"), [
    ("^claude-", "claude-*"), ("(?i)claude.*haiku", "*claude*haiku*"), ("haiku$", "*haiku"), ("^a\\.b$", "a.b"),
    ("^gpt-4.$", "gpt-4?"), ("a|b", None), ("^[ab]", None), ("x+", None),
])
def test_regex_glob(regex: str, glob: str | None) -> None:
    assert regex_glob(regex) == glob


def _errors(text: str) -> list[str]:
    with pytest.raises(ImportFailed) as failed:
        run_import("ccm-toml", text, "config.toml")
    return [p.render() for p in failed.value.problems if p.severity == "error"]


def test_models_fragment_has_no_router() -> None:
    errors = _errors((MUX / "models.example.toml").read_text())
    assert "config.toml:1: error: `router` is missing" in errors
    assert any("maps to provider `anthropic-native`, which [[providers]] does not declare" in e for e in errors)


def test_old_template_format_is_rejected_at_its_lines() -> None:
    assert _errors((MUX / "templates-deepseek.toml").read_text()) == [
        "config.toml:8: error: `providers[0].provider_type` is missing",
        "config.toml:10: error: unknown field `providers[0].api_base_url` (did you mean `base_url`?)",
        "config.toml:14: error: unknown field `providers[0].transformers`",
        "config.toml:18: error: unknown field `providers[0].model_context`",
    ]


def test_semantic_errors() -> None:
    config = """[router]
default = "nope"

[[providers]]
name = "a"
provider_type = "openai-ish"
api_key = "$K"
models = []

[[models]]
name = "m"
[[models.mappings]]
priority = "1"
provider = "a"
actual_model = "x"
"""
    assert _errors(config) == [
        "config.toml:6: error: provider `a` has an unknown provider_type `openai-ish`",
        "config.toml:13: error: `models[0].mappings[0].priority` must be a whole number, not a string",
    ]


def test_malformed_toml() -> None:
    assert _errors('[router\ndefault = "x"\n')[0].startswith("config.toml:1: error: not valid TOML:")
