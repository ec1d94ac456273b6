"""Whatever shape a config has, an import either fails with `file:line` problems or writes a file that checks:
it never crashes. Configs are built from each format's own vocabulary, so most reach deep into the converters."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccm.importers import ImportFailed
from tests.importers.conftest import assert_checks, run_import

WORDS = {
    "ccr": ["Providers", "Router", "fallback", "APIKEY", "name", "api_base_url", "api_key", "models", "transformer",
            "use", "default", "background", "think", "longContext", "longContextThreshold", "webSearch", "image",
            "maxtoken", "max_tokens", "deepseek", "gemini", "Anthropic", "openrouter", "p", "q"],
    "litellm": ["model_list", "router_settings", "litellm_settings", "general_settings", "model_name",
                "litellm_params", "model", "api_base", "api_key", "rpm", "weight", "max_tokens", "fallbacks",
                "num_retries", "model_group_alias", "master_key", "routing_strategy", "a", "b"],
    "ccm-toml": ["router", "providers", "models", "server", "default", "think", "websearch", "background", "name",
                 "provider_type", "api_key", "base_url", "mappings", "priority", "provider", "actual_model",
                 "enabled", "openai", "anthropic", "m", "p"],
}
VALUES = {
    "ccr": ["p,m", "q,n", "p", "https://x.example/v1/chat/completions", "$KEY", "sk-literal", "m", "n"],
    "litellm": ["a", "b", "openai/gpt-4o", "anthropic/claude-x", "os.environ/K", "https://x.example/v1", "sk-lit"],
    "ccm-toml": ["m", "p", "openai", "anthropic", "groq", "$KEY", "https://x.example/v1", "gpt-4o"],
}


def configs(kind: str) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.sampled_from(VALUES[kind]), st.integers(-2, 70000), st.booleans(), st.none())
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(WORDS[kind]), inner, max_size=6),
    ), max_leaves=40)


def _anything(kind: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(VALUES[kind]), st.integers(-1, 70000), st.none(), st.lists(st.sampled_from(
        VALUES[kind]), max_size=3))


def plausible_ccr() -> st.SearchStrategy[Any]:
    """Providers and a Router that mostly make sense, with any field now and then wrong."""
    names, models = st.sampled_from(["p", "q", "r"]), st.sampled_from(["m", "n", "claude-x", "a/b:c"])
    use = st.lists(st.one_of(st.sampled_from(["deepseek", "gemini", "Anthropic", "openrouter", "enhancetool",
                                              "tooluse", "reasoning", "maxcompletiontokens", "openai-responses"]),
                             st.tuples(st.just("maxtoken"), st.fixed_dictionaries({"max_tokens": st.integers(-5,
                                                                                                    9999)}))),
                   max_size=3).map(lambda u: [list(x) if isinstance(x, tuple) else x for x in u])
    provider = st.fixed_dictionaries(
        {"name": names, "api_base_url": st.sampled_from(["https://x.example/v1/chat/completions",
                                                         "http://localhost:11434/v1/chat/completions",
                                                         "https://g.example/v1beta/models/", "$URL", ""]),
         "models": st.lists(models, max_size=3)},
        optional={"api_key": st.sampled_from(["$K", "${K}", "sk-lit", "", "a $B c"]),
                  "transformer": st.fixed_dictionaries({"use": use}, optional={"m": st.fixed_dictionaries(
                      {"use": use})})})
    valid = st.builds(lambda p, m: f"{p},{m}", names, models)
    target = st.one_of(valid, valid, valid, _anything("ccr"))
    scenario = st.sampled_from(["background", "think", "longContext", "webSearch", "image"])
    providers = st.lists(provider, min_size=1, max_size=3, unique_by=lambda p: p["name"]).map(
        lambda ps: [{**ps[0], "name": "p"}, *ps[1:]] if all(p["name"] != "p" for p in ps) else ps)
    return st.fixed_dictionaries(
        {"Providers": providers,
         "Router": st.builds(lambda d, rest: {"default": d, **rest}, target, st.dictionaries(scenario, target,
                                                                                              max_size=5))},
        optional={"fallback": st.dictionaries(scenario, st.lists(target, max_size=3), max_size=3),
                  "APIKEY": st.sampled_from(["$X", "literal"]),
                  "Router_threshold": st.integers(-1, 200000)})


def plausible_litellm() -> st.SearchStrategy[Any]:
    groups = st.sampled_from(["a", "b", "gpt-4.1", "claude-*"])
    params = st.fixed_dictionaries(
        {"model": st.sampled_from(["openai/gpt-4o", "anthropic/claude-x", "ollama/q", "bedrock/x", "gpt-4o",
                                   "hosted_vllm/l", "groq/l", "*", "mistralai/m"])},
        optional={"api_base": st.sampled_from(["https://x.example/v1", "os.environ/B", "http://127.0.0.1:1/v1"]),
                  "api_key": st.sampled_from(["os.environ/K", "sk-lit", "none"]), "rpm": st.integers(0, 500),
                  "max_tokens": st.integers(0, 9000), "temperature": st.floats(0, 1)})
    entry = st.fixed_dictionaries({"model_name": groups, "litellm_params": params})
    router = st.fixed_dictionaries({}, optional={
        "fallbacks": st.lists(st.dictionaries(groups, st.lists(groups, max_size=2), max_size=2), max_size=2),
        "default_fallbacks": st.lists(groups, max_size=2), "num_retries": st.integers(-1, 5),
        "routing_strategy": st.sampled_from(["simple-shuffle", "least-busy", "latency-based-routing"]),
        "model_group_alias": st.dictionaries(st.sampled_from(["x", "y"]), groups, max_size=2),
        "allowed_fails": st.integers(-1, 5), "cooldown_time": st.integers(0, 90), "retry_after": st.integers(0, 9)})
    return st.fixed_dictionaries({"model_list": st.lists(entry, max_size=5), "router_settings": router})


def plausible_mux() -> st.SearchStrategy[Any]:
    names = st.sampled_from(["p", "q", "zai plan"])
    models = st.sampled_from(["m", "glm-4.6", "claude-x"])
    provider = st.fixed_dictionaries(
        {"name": names, "provider_type": st.sampled_from(["openai", "anthropic", "z.ai", "groq", "vertex-ai",
                                                          "gemini", "nope"]), "models": st.just([]),
         "api_key": st.sampled_from(["$K", "$K", "lit", ""])},
        optional={"enabled": st.booleans(),
                  "base_url": st.sampled_from(["https://x.example/v1/", "http://localhost:1"]),
                  "auth_type": st.sampled_from(["oauth", "apikey"])})
    mapping = st.fixed_dictionaries({"priority": st.integers(0, 3), "provider": names,
                                     "actual_model": st.sampled_from(["gpt-4o", "z/glm", "bad id"])})
    model = st.fixed_dictionaries({"name": models, "mappings": st.lists(mapping, min_size=1, max_size=3)})
    router = st.fixed_dictionaries({"default": models}, optional={
        "think": models, "background": models, "websearch": models,
        "auto_map_regex": st.sampled_from(["^claude-", "a|b", ""]), "background_regex": st.sampled_from(
            ["(?i)claude.*haiku", "haiku$", "[x]"])})
    every_provider = st.tuples(provider, provider, provider).map(
        lambda ps: [{**p, "name": name} for p, name in zip(ps, ["p", "q", "zai plan"], strict=True)])
    return st.fixed_dictionaries({"router": router, "providers": every_provider,
                                  "models": st.lists(model, min_size=1, max_size=3, unique_by=lambda m: m["name"])})


def _toml(value: Any) -> str | None:
    """TOML for a generated table, or None when TOML cannot say it (nulls, mixed arrays)."""
    if not isinstance(value, dict):
        return None

    def scalar(item: Any) -> str:
        if item is None:
            raise ValueError
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, str)):
            return json.dumps(item)
        if isinstance(item, list):
            return "[" + ", ".join(scalar(i) for i in item) + "]"
        return "{ " + ", ".join(f"{json.dumps(k)} = {scalar(v)}" for k, v in item.items()) + " }"

    try:
        text = "\n".join(f"{json.dumps(k)} = {scalar(v)}" for k, v in value.items()) + "\n"
        tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError):
        return None
    return text


def _attempt(kind: str, text: str) -> None:
    try:
        imported = run_import(kind, text, "config")
    except ImportFailed as failed:
        assert failed.problems and all(p.line >= 1 for p in failed.problems)
        assert any(p.severity == "error" for p in failed.problems)
        return
    assert_checks(imported.text)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(configs("ccr"), plausible_ccr()))
def test_ccr_never_crashes(config: Any) -> None:
    if isinstance(config, dict) and "Router_threshold" in config:
        config["Router"]["longContextThreshold"] = config.pop("Router_threshold")
    _attempt("ccr", json.dumps(config))


@FUZZ
@given(st.one_of(configs("litellm"), plausible_litellm()))
def test_litellm_never_crashes(config: Any) -> None:
    import yaml

    _attempt("litellm", yaml.safe_dump(config))


@FUZZ
@given(st.one_of(configs("ccm-toml"), plausible_mux()))
def test_mux_never_crashes(config: Any) -> None:
    text = _toml(config)
    if text is not None:
        _attempt("ccm-toml", text)


@pytest.mark.parametrize(("kind", "text"), [
    ("ccr", '{"Providers": [{"name": "p", "api_base_url": "https://x/v1/chat/completions", "api_key": "$K", '
            '"models": ["m"]}], "Router": {"default": "p,m"}}'),
    ("litellm", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/gpt-4o}\n"),
    ("ccm-toml", '[router]\ndefault = "m"\n[[providers]]\nname = "p"\nprovider_type = "openai"\napi_key = "$K"\n'
                 'models = []\n[[models]]\nname = "m"\n[[models.mappings]]\npriority = 1\nprovider = "p"\n'
                 'actual_model = "gpt-4o"\n'),
])
def test_the_smallest_config_of_each_format_imports(kind: str, text: str) -> None:
    assert_checks(run_import(kind, text, "config").text)
