"""`ccm import ccr`: claude-code-router configs → route files that check, pin the old routing and keep keys out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.targets import claude_code_router_config
from ccm.compile import compile_source
from ccm.importers import ImportFailed
from ccm.route import select_route
from tests.importers.conftest import FIXTURES, assert_checks, run_import, squashed, warnings_of

CCR = FIXTURES / "ccr"


@pytest.mark.parametrize("path", sorted(CCR.glob("*.json")), ids=lambda p: p.name)
def test_documented_examples_import_and_check(path: Path) -> None:
    imported = run_import("ccr", path)
    assert_checks(imported.text)
    for literal in ("sk-xxx", "your-secret-key", "sk-or-v1-", '"1"'):
        assert literal not in squashed(imported.text)


def test_bench_config_routes_like_the_bench() -> None:
    config = json.dumps(claude_code_router_config("http://127.0.0.1:9999", 3456))
    imported = run_import("ccr", config, "config.json")
    assert_checks(imported.text)
    table = compile_source(imported.text, "routes.ccm", environ={}).table
    assert table is not None
    # the bench's routes, by their `provider,model` names: each reaches its own provider, passthrough ones as anthropic
    assert select_route(table, {"model": "claude-opus-5-5"}).target.provider == "openai"
    stream = select_route(table, {"model": "anthropic-stream,claude-bench"}).target
    assert (stream.provider, stream.model) == ("anthropic-stream", "claude-bench")
    assert table.providers["anthropic-stream"].type == "anthropic"
    assert table.providers["anthropic-stream"].url.value == "http://127.0.0.1:9999/anthropic-stream"  # type: ignore[union-attr]
    assert table.providers["openai"].url.value == "http://127.0.0.1:9999/openai/v1"  # type: ignore[union-attr]
    assert "bench-key" not in squashed(imported.text)


def test_readme_example_scenarios_and_transformers() -> None:
    imported = run_import("ccr", CCR / "readme-example.json")
    text = squashed(imported.text)
    assert 'auth env("CCM_API_KEY")' in text
    assert 'background "*claude*haiku*"' in text
    assert "tokens > 60k -> gemini-2-5-pro-preview" in text
    assert 'url "https://api.deepseek.com"' in text  # CCR's full /chat/completions URL, as ccm's base
    assert 'url "https://generativelanguage.googleapis.com/v1beta"' in text
    assert "model deepseek-chat = deepseek/deepseek-chat {\n max_output 8192\n}" in text  # the deepseek transformer
    assert "quirks keep_cache_control" in text  # openrouter's transformer kept cache_control for Claude models
    assert "model gemini-2-5-flash = gemini/gemini-2.5-flash {\n quirks google_search\n}" in text
    assert "max_output 65536\n quirks replay_reasoning" in text  # maxtoken + reasoning on the Qwen thinking model
    assert 'test "longContext: over 60000 tokens"' in text and "tokens 60001" in text
    report = warnings_of(imported)
    assert "readme-example.json:30: warning: `deepseek,deepseek-chat`: transformer `tooluse`" in report
    assert "readme-example.json:2: warning: APIKEY" in report and "export CCM_API_KEY" in report
    assert "readme-example.json:11: warning: provider `openrouter`: its key was written in the file" in report
    # the same report heads the file
    assert "# - readme-example.json:30: `deepseek,deepseek-chat`: transformer `tooluse`" in text


def test_ui_example_reports_what_has_no_equivalent() -> None:
    imported = run_import("ccr", CCR / "ui-config.example.json")
    report = warnings_of(imported)
    assert "`transformers`: custom transformer plugins" in report
    assert "transformer `gemini-cli` reaches a backend ccm has no adapter for" in report
    assert "HOST/PORT" in report and "--port 8080" in report
    assert "provider `azure`: CCR posted to `https://your-resource-name.openai.azure.com/` as written" in report
    assert 'env("CCM_API_KEY")' in squashed(imported.text)  # APIKEY "1" is not copied


def test_json5_fallbacks_become_chains_and_an_image_rule() -> None:
    imported = run_import("ccr", CCR / "fallback-json5.json")
    text = squashed(imported.text)
    assert 'auth env("CCR_APIKEY")' in text
    assert 'key env("OPENROUTER_API_KEY")' in text  # ${VAR}
    assert "fallback deepseek-chat -> glm-4-5 -> claude-sonnet-4" in text
    assert "fallback deepseek-reasoner -> claude-3-7-sonnet-thinking" in text
    assert text.index("image -> gemini-2-5-pro") < text.index("direct") < text.index("tokens > 100k")
    assert "fallback.background` falls back to its own model; dropped" in warnings_of(imported)
    assert_checks(imported.text)


def test_scenarios_sharing_a_model_but_not_its_fallbacks_get_their_own_alias() -> None:
    config = {
        "Providers": [{"name": "p", "api_base_url": "https://p.example/v1/chat/completions", "api_key": "$P_KEY",
                       "models": ["main", "spare"]}],
        "Router": {"default": "p,main", "think": "p,main"},
        "fallback": {"think": ["p,spare"]},
    }
    imported = run_import("ccr", json.dumps(config), "config.json")
    assert "model main-think = p/main" in squashed(imported.text)
    assert "fallback main-think -> spare" in squashed(imported.text)
    assert "thinking -> main-think" in squashed(imported.text) and "default -> main" in squashed(imported.text)
    assert_checks(imported.text)


def test_interpolated_values() -> None:
    config = {
        "Providers": [{"name": "corp", "api_base_url": "https://${CORP_HOST}/v1/chat/completions",
                       "api_key": "Bearer $CORP_TOKEN", "models": ["m"]},
                      {"name": "whole", "api_base_url": "$WHOLE_URL", "api_key": "${WHOLE_KEY}", "models": ["w"]}],
        "Router": {"default": "corp,m"},
    }
    imported = run_import("ccr", json.dumps(config), "config.json")
    assert 'url env("CORP_URL")' in squashed(imported.text) and 'key env("CORP_API_KEY")' in squashed(imported.text)
    assert 'url env("WHOLE_URL")' in squashed(imported.text) and 'key env("WHOLE_KEY")' in squashed(imported.text)
    report = warnings_of(imported)
    assert "export CORP_URL" in report and "export CORP_API_KEY" in report
    assert "$WHOLE_URL, which holds CCR's full endpoint URL" in report
    assert_checks(imported.text)


def _problems(text: str) -> list[str]:
    with pytest.raises(ImportFailed) as failed:
        run_import("ccr", text, "config.json")
    return [p.render() for p in failed.value.problems if p.severity == "error"]


def test_malformed_json5_is_an_error_at_its_line() -> None:
    assert _problems('{\n  "Providers": [\n    {"name": "a",}\n    {"name": "b"}\n  ]\n}') == [
        "config.json:4: error: not valid JSON5: expected `,` or `]` after a value, found `{` (column 5)"]


def test_semantic_errors_point_at_their_keys() -> None:
    text = """{
  "Providers": [
    {
      "name": "deepseek",
      "api_base_ur": "https://api.deepseek.com/chat/completions",
      "api_key": "$DEEPSEEK_API_KEY",
      "models": "deepseek-chat"
    },
    { "name": "nourl", "api_key": "$K", "models": [] }
  ],
  "Router": {
    "default": "deepsek,deepseek-chat",
    "think": "nocomma",
    "bakground": "x,y"
  }
}"""
    assert _problems(text) == [
        "config.json:3: error: provider `deepseek` has no `api_base_url`: ccm needs the URL to send its requests to",
        "config.json:5: error: unknown field `Providers[0].api_base_ur` (did you mean `api_base_url`?)",
        "config.json:9: error: provider `nourl` has no `api_base_url`: ccm needs the URL to send its requests to",
        "config.json:12: error: `Router.default` names provider `deepsek`, which `Providers` does not declare",
        "config.json:13: error: `Router.think` must be `provider,model`, not `nocomma`",
        "config.json:14: error: unknown field `Router.bakground` (did you mean `background`?)",
    ]


def test_wrong_types_and_missing_router() -> None:
    problems = _problems('{"Providers": {"name": "x"}}')
    assert "config.json:1: error: `Providers` must be a list, not an object" in problems
    assert "config.json:1: error: `Router` is missing" in problems
    assert _problems("[1, 2]") == ["config.json:1: error: the config must be an object, not a list"]


def test_a_version_3_config_is_named_as_such() -> None:
    problems = _problems('{\n  "Providers": [],\n  "Router": {"builtInRules": {}, "rules": []}\n}')
    assert problems == ["config.json:3: error: this `Router` is claude-code-router 3's (`rules`, `builtInRules`); "
                        "ccm import reads the 2.x config, whose Router names default/background/think/longContext/"
                        "webSearch/image models"]


def test_a_fallback_for_an_unset_scenario_is_reported() -> None:
    config = {"Providers": [{"name": "p", "api_base_url": "https://p.example/v1/chat/completions", "api_key": "$K",
                             "models": ["a", "b"]}],
              "Router": {"default": "p,a"}, "fallback": {"think": ["p,b"]}}
    imported = run_import("ccr", json.dumps(config), "config.json")
    assert "`fallback.think`: `Router.think` is not set, so CCR never used it; ignored" in warnings_of(imported)
    assert "\nfallback " not in imported.text
