"""`examples/mixed.ccm`, run as is, with each of its four providers pointed at the matching strict fake.

Anthropic → FakeAnthropic, DeepSeek → FakeDeepSeek, Gemini → FakeGemini, OpenRouter → FakeOpenAI in OpenRouter's
flavour (`reasoning` field, keep-alive comments). Each scenario sends the request Claude Code really sends for it
(the captured requests in tests/fixtures) through the anthropic SDK, streaming, and checks three witnesses
that agree: the `x-ccm-model` header, the fake that recorded the request (and only that one), and the answer's text,
which names the fake that wrote it. Every fake validates what it receives, so each route is also a translation
check of a real Claude Code request for that protocol.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import load_fixture
from tests.fakes import CcmServer, FakeAnthropic, FakeOpenAI, Reply, Status, serve
from tests.fakes.fake_deepseek import FakeDeepSeek
from tests.fakes.fake_gemini import FakeGemini, text_chunk

from .conftest import CLIENT_KEY, Stack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mixed.ccm"
KEYS = {"anthropic": "sk-ant-mixed", "deepseek": "sk-mixed-deepseek", "gemini": "mixed-gemini-key",
        "openrouter": "sk-or-mixed"}
GEMINI_USAGE = {"promptTokenCount": 160000, "candidatesTokenCount": 5, "totalTokenCount": 160005}


@dataclass
class Mixed:
    ccm: CcmServer
    anthropic: FakeAnthropic
    deepseek: FakeDeepSeek
    gemini: FakeGemini
    openrouter: FakeOpenAI

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.ccm.url, api_key=CLIENT_KEY, max_retries=0, timeout=60.0)

    def reset(self) -> None:
        self.anthropic.reset(Reply(text="Answered by anthropic."))
        self.deepseek.reset(Reply(text="Answered by deepseek."))
        self.openrouter.reset(Reply(text="Answered by openrouter."))
        self.gemini.exchanges.clear()
        self.gemini.default = [text_chunk("Answered by gemini.", finish="STOP", usage=GEMINI_USAGE)]

    def served(self) -> dict[str, list[dict[str, Any]]]:
        """The bodies each provider's fake received (model requests only)."""
        return {
            "anthropic": [e.json for e in self.anthropic.requests("/v1/messages")],
            "deepseek": [e.json for e in self.deepseek.requests("/v1/chat/completions")],
            "gemini": [{"model": e.model, **e.body} for e in self.gemini.exchanges],
            "openrouter": [e.json for e in self.openrouter.requests("/v1/chat/completions")],
        }

    def refusals(self) -> list[str]:
        return [*self.anthropic.rejections, *self.deepseek.rejections, *self.openrouter.rejections,
                *(e.rejected for e in self.gemini.exchanges if e.rejected)]


@pytest.fixture(scope="module")
def mixed_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    fakes = (FakeAnthropic(KEYS["anthropic"]), FakeDeepSeek(KEYS["deepseek"]), FakeGemini(key=KEYS["gemini"]),
             FakeOpenAI(KEYS["openrouter"], reasoning_field="reasoning", keepalive_comments=True))
    with ExitStack() as stack:
        urls = [stack.enter_context(serve(fake))[0] for fake in fakes]
        env = {
            "ANTHROPIC_UPSTREAM_URL": urls[0], "ANTHROPIC_API_KEY": KEYS["anthropic"],
            "DEEPSEEK_BASE_URL": f"{urls[1]}/v1", "DEEPSEEK_API_KEY": KEYS["deepseek"],
            "GEMINI_BASE_URL": urls[2], "GEMINI_API_KEY": KEYS["gemini"],
            "OPENROUTER_BASE_URL": f"{urls[3]}/v1", "OPENROUTER_API_KEY": KEYS["openrouter"],
        }
        ccm = stack.enter_context(CcmServer.from_text(tmp_path_factory.mktemp("mixed"), EXAMPLE.read_text(), env))
        yield Mixed(ccm, *fakes)  # type: ignore[arg-type]


@pytest.fixture
def mixed(mixed_module: Mixed) -> Iterator[Mixed]:
    mixed_module.reset()
    yield mixed_module
    for fake in (mixed_module.anthropic, mixed_module.deepseek, mixed_module.openrouter):
        Stack(mixed_module.ccm, fake).check_healthy()


def send(mixed: Mixed, capture: dict[str, Any]) -> tuple[str, str]:
    """One captured Claude Code request, streamed through the SDK with its own beta header: (x-ccm-model, text)."""
    body = {k: v for k, v in capture["body"].items() if k != "stream"}
    known = {k: body.pop(k) for k in ("model", "max_tokens", "messages")}
    raw = mixed.client().messages.with_raw_response.create(
        **known, stream=True, extra_body=body,
        extra_headers={"anthropic-beta": capture["headers"].get("anthropic-beta", "")},
    )
    text = "".join(
        event.delta.text for event in raw.parse()
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    return raw.headers["x-ccm-model"], text


# --- the scenarios: each edits a real Claude Code request as little as possible ---------------------------------------


def web_search() -> dict[str, Any]:
    return load_fixture("web-search-server-tool.json")


def subagent() -> dict[str, Any]:
    return load_fixture("subagent-request.json")


def background() -> dict[str, Any]:
    return load_fixture("model-haiku.json")


def long_session() -> dict[str, Any]:
    capture = copy.deepcopy(load_fixture("print-mode-first-turn.json"))
    pasted = {"type": "text", "text": "lorem ipsum " * 80_000}  # ~160k tokens: over the file's `tokens > 150k`
    capture["body"]["messages"][0]["content"].insert(0, pasted)
    return capture


def screenshot() -> dict[str, Any]:
    return load_fixture("image-tool-result.json")


def main_agent() -> dict[str, Any]:
    return load_fixture("print-mode-first-turn.json")


def no_thinking() -> dict[str, Any]:
    """The main agent's request with thinking off: `tool "WebFetch" and not thinking` sends it to the coder."""
    capture = copy.deepcopy(load_fixture("print-mode-first-turn.json"))
    del capture["body"]["thinking"]
    return capture


def plain() -> dict[str, Any]:
    body = {"model": "claude-opus-5-5", "max_tokens": 4096, "messages": [{"role": "user", "content": "Say hi."}]}
    return {"headers": {}, "body": body}


SCENARIOS: list[tuple[Callable[[], dict[str, Any]], str, str, str]] = [
    # (request, x-ccm-model, the provider whose fake serves it, the model id that fake receives)
    (web_search, "openrouter/perplexity/sonar-pro", "openrouter", "perplexity/sonar-pro"),
    (subagent, "coder", "deepseek", "deepseek-chat"),
    (background, "coder", "deepseek", "deepseek-chat"),
    (long_session, "long", "gemini", "gemini-3-pro"),
    (screenshot, "vision", "openrouter", "openai/gpt-5"),
    (main_agent, "opus", "anthropic", "claude-opus-5-5"),
    (no_thinking, "coder", "deepseek", "deepseek-chat"),
    (plain, "coder", "deepseek", "deepseek-chat"),
]


@pytest.mark.parametrize(
    ("request_for", "alias", "provider", "model_id"), SCENARIOS, ids=[s[0].__name__ for s in SCENARIOS]
)
def test_each_scenario_reaches_its_provider(
    mixed: Mixed, request_for: Callable[[], dict[str, Any]], alias: str, provider: str, model_id: str
) -> None:
    served_by, text = send(mixed, request_for())
    assert mixed.refusals() == []
    assert served_by == alias
    assert text == f"Answered by {provider}."
    served = mixed.served()
    assert {name for name, bodies in served.items() if bodies} == {provider}
    assert [body["model"] for body in served[provider]] == [model_id]


def test_each_provider_gets_its_own_limits_and_headers(mixed: Mixed) -> None:
    """Claude Code asks for 128000 output tokens everywhere; each model's `max_output` applies on its own wire."""
    for scenario in (subagent, long_session, screenshot, main_agent, web_search):
        send(mixed, scenario())
    assert mixed.refusals() == []
    served = mixed.served()
    assert served["deepseek"][0]["max_tokens"] == 8000  # coder: max_output 8k (DeepSeek refuses above 8192)
    assert served["gemini"][0]["generationConfig"]["maxOutputTokens"] == 64000  # long: max_output 64k
    assert served["openrouter"][0]["max_tokens"] == 32000  # vision: max_output 32k
    assert served["anthropic"][0]["max_tokens"] == 128000  # opus: passthrough, untouched
    assert "max_tokens" in served["openrouter"][1]  # the literal target has no max_output: sent as asked
    openrouter = mixed.openrouter.requests("/v1/chat/completions")[0].headers
    assert (openrouter["http-referer"], openrouter["x-title"]) == ("https://github.com/ccm", "ccm")
    assert mixed.openrouter.requests()[0].headers["authorization"] == f"Bearer {KEYS['openrouter']}"
    assert mixed.deepseek.requests()[0].headers["authorization"] == f"Bearer {KEYS['deepseek']}"
    assert mixed.gemini.exchanges[0].headers["x-goog-api-key"] == KEYS["gemini"]
    assert mixed.anthropic.requests()[0].headers["x-api-key"] == KEYS["anthropic"]


def test_coder_down_falls_back_to_opus(mixed: Mixed) -> None:
    """`fallback coder -> opus`: DeepSeek failing (after the provider's own retries) hands the request to Anthropic."""
    mixed.deepseek.reset(Status(503, "Service is too busy. Please try again later."))
    served_by, text = send(mixed, subagent())
    assert (served_by, text) == ("opus", "Answered by anthropic.")
    served = mixed.served()
    assert len(served["deepseek"]) == 4  # the first try and `retry 3`
    assert [body["model"] for body in served["anthropic"]] == ["claude-opus-5-5"]
