"""select_route on hand-built tables and on the real Claude Code requests."""

from __future__ import annotations

from typing import Any

import pytest

from ccm.route import NoRouteError, select_route, strip_subagent_tag
from ccm.table import (
    All,
    AnyOf,
    Background,
    Default,
    Deployment,
    Direct,
    Effort,
    Header,
    Image,
    Literal_,
    Model,
    ModelName,
    Not,
    Provider,
    RoutingTable,
    Rule,
    Subagent,
    Thinking,
    Tokens,
    Tool,
    WebSearch,
)
from tests.conftest import fixture_names, load_fixture


def provider(name: str, type_: str = "openai") -> Provider:
    return Provider(name=name, type=type_, url=Literal_(value="http://127.0.0.1:1"), auth="bearer")  # type: ignore[arg-type]


def model(name: str, provider_name: str, model_id: str, **extra: Any) -> Model:
    return Model(name=name, provider=provider_name, model=model_id, **extra)


def make_table(rules: list[tuple[Any, str | None]],
               fallbacks: dict[str, tuple[str, ...]] | None = None) -> RoutingTable:
    models = {
        "opus": model("opus", "anthropic", "claude-opus-5-5"),
        "coder": model("coder", "deep", "deepseek-chat", max_output=8000),
        "cheap": model("cheap", "deep", "deepseek-lite"),
        "long": model("long", "gem", "gemini-3-pro", context=1_000_000),
        "search": model("search", "deep", "sonar"),
    }
    return RoutingTable(
        version="test",
        sources=("test.ccm",),
        providers={"anthropic": provider("anthropic", "anthropic"), "deep": provider("deep"), "gem": provider("gem")},
        models=models,
        rules=tuple(Rule(condition=c, target=t, source=str(c.kind)) for c, t in rules),
        fallbacks=fallbacks or {},
    )


SCENARIOS = make_table(
    [
        (Direct(), None),
        (WebSearch(), "search"),
        (Subagent(), "cheap"),
        (Tokens(op=">", value=60_000), "long"),
        (Effort(op=">=", level="xhigh"), "opus"),
        (Background(), "cheap"),
        (Image(), "opus"),
        (Default(), "coder"),
    ],
    fallbacks={"coder": ("cheap", "opus"), "opus": ("coder",)},
)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-opus-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **fields}


def target(request: dict[str, Any], table: RoutingTable = SCENARIOS, tokens: int = 10, **headers: str) -> str:
    return select_route(table, request, headers, count_tokens=lambda _: tokens).target.name


def test_default_with_fallback_chain() -> None:
    decision = select_route(SCENARIOS, body(), count_tokens=lambda _: 10)
    assert [m.name for m in decision.chain] == ["coder", "cheap", "opus"]
    assert decision.rule is not None and decision.rule_index == 7
    assert "rule 8 `default`" in decision.reason


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (body(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}]), "search"),
        (body(model="claude-haiku-5-5"), "cheap"),
        (body(output_config={"effort": "max"}), "opus"),
        (body(output_config={"effort": "high"}), "coder"),
        (body(thinking={"type": "enabled", "budget_tokens": 31999}), "opus"),
        (body(thinking={"type": "enabled", "budget_tokens": 4000}), "coder"),
        (body(system=[{"type": "text", "text": "x-anthropic-billing-header: cc_is_subagent=true;"}]), "cheap"),
    ],
)
def test_scenarios(request_: dict[str, Any], expected: str) -> None:
    assert target(request_) == expected


def test_tokens_counted_only_when_reached() -> None:
    calls: list[int] = []

    def count(_: Any) -> int:
        calls.append(1)
        return 70_000

    search = body(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert select_route(SCENARIOS, search, count_tokens=count).target.name == "search"
    assert calls == []  # the websearch rule matched before the tokens rule
    assert select_route(SCENARIOS, body(), count_tokens=count).target.name == "long"
    assert calls == [1]


def test_image_inside_tool_result() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    request = body(
        messages=[
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}]},
        ]
    )
    assert target(request) == "opus"


def test_direct_picks() -> None:
    assert target(body(model="coder")) == "coder"
    # provider/model that is a declared alias's target uses the alias (its caps and fallbacks)
    decision = select_route(SCENARIOS, body(model="deep/deepseek-chat"))
    assert decision.target.name == "coder" and len(decision.chain) == 3
    # an undeclared model of a declared provider, in both the / and CCR's , spellings
    for name in ("deep/some-new-model", "deep,some-new-model"):
        picked = select_route(SCENARIOS, body(model=name)).target
        assert (picked.provider, picked.model, picked.declared) == ("deep", "some-new-model", False)
    # a model id containing slashes (OpenRouter style)
    assert select_route(SCENARIOS, body(model="deep/perplexity/sonar")).target.model == "perplexity/sonar"
    # unknown provider: not a pick, falls through the rules
    assert target(body(model="nope/x")) == "coder"


def test_a_pick_of_one_deployment_pins_it_with_the_alias_options_and_fallbacks() -> None:
    balanced = model(
        "coder", "deep", "deepseek-chat", max_output=8000,
        deployments=(Deployment(provider="deep", model="deepseek-chat", weight=3),
                     Deployment(provider="gem", model="deepseek-mirror", weight=1)),
    )
    table = SCENARIOS.model_copy(update={"models": {**SCENARIOS.models, "coder": balanced}})
    assert select_route(table, body(model="coder")).target is balanced  # the alias: balanced across both
    for name, provider_name in (("deep/deepseek-chat", "deep"), ("gem/deepseek-mirror", "gem")):
        chain = select_route(table, body(model=name)).chain
        assert (chain[0].provider, chain[0].deployments, chain[0].max_output) == (provider_name, (), 8000)
        assert [m.name for m in chain] == ["coder", "cheap", "opus"]


def test_subagent_tag_picks_and_is_stripped() -> None:
    system = [
        {"type": "text", "text": "billing"},
        {"type": "text", "text": "<CCM-SUBAGENT-MODEL>gem/gemini-3-pro</CCM-SUBAGENT-MODEL>You are a subagent."},
    ]
    request = body(system=system)
    decision = select_route(SCENARIOS, request)
    assert decision.target.name == "long" and decision.strip_subagent_tag
    stripped = strip_subagent_tag(request)
    assert stripped["system"][1]["text"] == "You are a subagent."
    assert request["system"][1]["text"].startswith("<CCM")  # the original is untouched


def test_combinators_headers_tools() -> None:
    table = make_table(
        [
            (All(operands=(Thinking(), Not(operand=Background()))), "opus"),
            (AnyOf(operands=(Header(name="X-Team", glob="infra*"), Tool(glob="Web*"))), "search"),
            (ModelName(glob="claude-sonnet-*"), "coder"),
            (Header(name="x-debug"), "cheap"),
            (Default(), "long"),
        ]
    )
    assert target(body(thinking={"type": "adaptive"}), table) == "opus"
    assert target(body(model="claude-haiku-5-5", thinking={"type": "adaptive"}), table) == "long"
    assert target(body(), table, **{"x-team": "infra-eu"}) == "search"
    assert target(body(tools=[{"name": "WebFetch", "input_schema": {"type": "object"}}]), table) == "search"
    assert target(body(model="claude-sonnet-5-5"), table) == "coder"
    assert target(body(), table, **{"x-debug": ""}) == "cheap"


def test_no_default_raises() -> None:
    with pytest.raises(NoRouteError):
        select_route(make_table([(WebSearch(), "search")]), body())


@pytest.mark.parametrize("name", fixture_names())
def test_every_fixture_routes(name: str) -> None:
    request = load_fixture(name)["body"]
    decision = select_route(SCENARIOS, request, count_tokens=lambda _: 10)
    assert decision.target.name in SCENARIOS.models
