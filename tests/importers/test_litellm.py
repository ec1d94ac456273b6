"""`ccm import litellm`: LiteLLM proxy configs → route files: model groups, deployments, fallbacks, retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.targets import ROUTES, litellm_config
from ccm.compile import compile_source
from ccm.importers import ImportFailed
from ccm.route import select_route
from tests.importers.conftest import FIXTURES, assert_checks, run_import, squashed, warnings_of

LITELLM = FIXTURES / "litellm"


@pytest.mark.parametrize("path", sorted(LITELLM.glob("*.yaml")), ids=lambda p: p.name)
def test_documented_examples_import_and_check(path: Path) -> None:
    imported = run_import("litellm", path)
    assert_checks(imported.text)
    for literal in ("sk-1234", "sk-uj6F", "sk-Imn", "<my-openai-key>", "eYVX71"):
        assert literal not in imported.text


def test_bench_config_routes_each_model_group() -> None:
    imported = run_import("litellm", litellm_config("http://127.0.0.1:9999", "sk-bench-secret"), "litellm.yaml")
    assert_checks(imported.text)
    assert "sk-bench-secret" not in imported.text and "sk-bench-secret" not in warnings_of(imported)
    table = compile_source(imported.text, "routes.ccm", environ={}).table
    assert table is not None
    for route in ROUTES:
        target = select_route(table, {"model": route.model}).target
        provider = table.providers[target.provider]
        assert provider.type == route.kind
        assert provider.url.value.endswith(route.base + ("/v1" if route.kind == "openai" else ""))  # type: ignore[union-attr]
    assert select_route(table, {"model": "claude-haiku-5-5"}).target.name == "claude-haiku-5-5"
    assert table.settings.auth[0].name == "CCM_API_KEY"  # type: ignore[union-attr]


def test_claude_code_quickstart_keeps_its_variables() -> None:
    text = squashed(run_import("litellm", LITELLM / "claude-code-quickstart.yaml").text)
    assert 'auth env("LITELLM_MASTER_KEY")' in text
    assert 'key env("ANTHROPIC_API_KEY")' in text
    assert 'model == "claude-haiku-4-5-20251001" -> claude-haiku-4-5-20251001' in text


def test_load_balancing_example() -> None:
    imported = run_import("litellm", LITELLM / "configs-load-balancing.yaml")
    text = squashed(imported.text)
    assert 'model == "gpt-4" -> gpt-4o # model_group_alias' in text
    assert 'test "gpt-4 is an alias of gpt-4o"' in text
    assert "retry 2" in text  # router_settings win over litellm_settings (3)
    assert "breaker 4 failures" in text  # allowed_fails 3: the fourth failure cools the deployment down
    assert "timeout total 30s" in text  # router_settings.timeout
    report = warnings_of(imported)
    assert "deployment `huggingface/HuggingFaceH4/zephyr-7b-beta` is skipped (ccm has no adapter for it)" in report
    assert "the fallbacks of model group `zephyr-beta` are dropped: it was not imported" in report
    assert "`context_window_fallbacks`" in report and "`router_settings.redis_host`" in report


def test_deployments_weights_fallbacks_and_options() -> None:
    config = """model_list:
  - model_name: coder
    litellm_params:
      model: deepseek/deepseek-chat
      api_key: os.environ/DEEPSEEK_API_KEY
      rpm: 300
      max_tokens: 8192
      temperature: 0.2
      input_cost_per_token: 0.00000027
      output_cost_per_token: 0.0000011
    model_info:
      max_input_tokens: 128000
  - model_name: coder
    litellm_params:
      model: openrouter/deepseek/deepseek-chat
      rpm: 100
  - model_name: local
    litellm_params:
      model: ollama/qwen2.5-coder
  - model_name: claude-*
    litellm_params:
      model: anthropic/claude-sonnet-4-5
router_settings:
  routing_strategy: least-busy
  fallbacks: [{"coder": ["local"]}]
  default_fallbacks: ["coder"]
  num_retries: 1
  retry_after: 2
  cooldown_time: 60
"""
    imported = run_import("litellm", config, "config.yaml")
    text = squashed(imported.text)
    assert "model coder = deepseek/deepseek-chat weight 3, openrouter/deepseek/deepseek-chat weight 1 {" in text
    assert "context 128k" in text and "max_output 8192" in text
    assert "price input 0.27 output 1.1" in text
    assert "force { temperature: 0.2 }" in text and "balance least-busy" in text
    assert 'url "http://localhost:11434/v1"' in text  # ollama's OpenAI-compatible endpoint
    assert 'key env("OPENROUTER_API_KEY")' in text  # LiteLLM's default variable for the prefix
    assert 'model ~ "claude-*" -> claude' in text
    assert "fallback coder -> local" in text and "fallback local -> coder" in text
    assert "fallback claude -> coder" in text
    assert "retry 1 backoff 2s..8s" in text and "breaker cooldown 1m" in text
    assert text.index('model == "coder"') < text.index('model ~ "claude-*"') < text.index("direct")
    assert_checks(imported.text)


def test_headers_keep_credentials_out() -> None:
    config = """model_list:
  - model_name: kimi
    litellm_params:
      model: anthropic/kimi-k2
      api_base: https://gateway.example/api/anthropic
      api_key: os.environ/GATEWAY_KEY
      extra_headers:
        x-api-key: sk-header-secret
        X-Team: infra
        Authorization: os.environ/GATEWAY_AUTH
"""
    imported = run_import("litellm", config, "config.yaml")
    text = squashed(imported.text)
    assert ('headers { "x-api-key" = env("ANTHROPIC_X_API_KEY"), "X-Team" = "infra", "Authorization" = '
            'env("GATEWAY_AUTH") }') in text
    assert "sk-header-secret" not in imported.text and "sk-header-secret" not in warnings_of(imported)
    assert "header `x-api-key` was written in the file" in warnings_of(imported)
    assert_checks(imported.text)


def _errors(text: str) -> list[str]:
    with pytest.raises(ImportFailed) as failed:
        run_import("litellm", text, "config.yaml")
    return [p.render() for p in failed.value.problems if p.severity == "error"]


def test_malformed_yaml_is_an_error_at_its_line() -> None:
    errors = _errors("model_list:\n  - model_name: a\n    litellm_params: {model: openai/x\n")
    assert len(errors) == 1 and errors[0].startswith("config.yaml:4: error: not valid YAML")


def test_semantic_errors_point_at_their_keys() -> None:
    config = """model_list:
  - model_name: a
    litellm_params:
      model: hosted_vllm/llama
  - model_nam: b
    litellm_params:
      model: openai/gpt-4o
  - model_name: c
    litellm_params: "openai/gpt-4o"
router_settings:
  fallbacks: [{"a": ["nope"]}]
  model_group_alias: {"x": "missing"}
"""
    assert _errors(config) == [
        "config.yaml:4: error: `hosted_vllm/` needs an `api_base`: LiteLLM has no default URL for it, and neither has "
        "ccm",
        "config.yaml:5: error: unknown field `model_list[1].model_nam` (did you mean `model_name`?)",
        "config.yaml:5: error: `model_list[1].model_name` is missing",
        "config.yaml:9: error: `model_list[2].litellm_params` must be an object, not a string",
    ]


def test_fallbacks_to_unknown_groups() -> None:
    config = ("model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/gpt-4o\n"
              "router_settings:\n  fallbacks: [{\"a\": [\"nope\"]}]\n  model_group_alias: {\"x\": \"missing\"}\n")
    assert _errors(config) == [
        "config.yaml:6: error: fallback names model group `nope`, which model_list does not declare",
        "config.yaml:7: error: model_group_alias `x` names model group `missing`, which model_list does not declare",
    ]


def test_nothing_importable_is_an_error() -> None:
    errors = _errors("model_list:\n  - model_name: a\n    litellm_params:\n      model: bedrock/claude\n")
    assert errors == ["config.yaml:1: error: no model group could be imported: ccm needs at least one model to "
                      "route to"]
