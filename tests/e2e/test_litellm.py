"""LiteLLM as an upstream, end to end: the anthropic SDK → `ccm run` → the real LiteLLM proxy (from PyPI, in its own
venv: scripts/install-litellm.sh) → the strict FakeOpenAI, all on 127.0.0.1. Both ways docs/providers.md describes:
LiteLLM's OpenAI-compatible `/v1/chat/completions` (`type openai`: ccm translates) and its Anthropic-style
`/v1/messages` (`type anthropic`: ccm passes the request through, LiteLLM translates), streamed and not, with tool
calls. LiteLLM starts with its telemetry off and its model cost map read from its own package (no network)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.fakes import CcmServer, FakeOpenAI, Reply, ToolCall, free_port, serve

pytestmark = pytest.mark.slow

VENV = Path(os.environ.get("CCM_CACHE") or Path.home() / ".cache" / "ccm") / "litellm-venv"
LITELLM = VENV / "bin" / "litellm"
UPSTREAM_KEY = "sk-fake-behind-litellm"
MASTER_KEY = "sk-litellm-e2e-master"  # LiteLLM's own key, which ccm presents as the provider's key
STARTUP_SECONDS = 120.0
ROUTES = """
provider litellm {
  type openai
  url  env("LITELLM_OPENAI_URL")
  key  env("LITELLM_KEY")
}
provider litellm-messages {
  type anthropic
  url  env("LITELLM_URL")
  key  env("LITELLM_KEY")
}
model chat = litellm/fake-chat {
  max_output 8k
}
model messages = litellm-messages/fake-chat {
  max_output 8k
}
route {
  model ~ "*haiku*" -> messages
  default -> chat
}
retry 0
"""
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# LiteLLM must not reach the network: no telemetry, the cost map from its package, no callbacks
QUIET = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "DISABLE_SCHEMA_UPDATE": "True",
    # LiteLLM sends /v1/messages for `openai/` models to the Responses API unless told to use chat/completions
    "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "true",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CcmServer, FakeOpenAI]]:
    if not LITELLM.exists():
        pytest.fail(f"LiteLLM is not installed in {VENV}: run scripts/install-litellm.sh (make test does)")
    folder = tmp_path_factory.mktemp("litellm")
    with serve(FakeOpenAI(UPSTREAM_KEY, max_output=8192)) as (fake_url, fake):
        config = folder / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: fake-chat\n"
            "    litellm_params:\n"
            "      model: openai/gpt-fake\n"
            f"      api_base: {fake_url}/v1\n"
            f"      api_key: {UPSTREAM_KEY}\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
            "  drop_params: true\n"
            "general_settings:\n"
            f"  master_key: {MASTER_KEY}\n"
        )
        port = free_port()
        log = (folder / "litellm.log").open("wb")
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder),
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **QUIET}
        litellm = subprocess.Popen(
            [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment, cwd=folder)
        try:
            _wait_ready(f"http://127.0.0.1:{port}", litellm, folder / "litellm.log")
            env = {"LITELLM_URL": f"http://127.0.0.1:{port}", "LITELLM_OPENAI_URL": f"http://127.0.0.1:{port}/v1",
                   "LITELLM_KEY": MASTER_KEY}
            with CcmServer.from_text(folder, ROUTES, env) as ccm:
                yield ccm, fake
                assert "Traceback" not in ccm.logs(), ccm.logs()
        finally:
            litellm.terminate()
            try:
                litellm.wait(15)
            except subprocess.TimeoutExpired:
                litellm.kill()
                litellm.wait(5)
            log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"litellm exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"litellm did not start within {STARTUP_SECONDS} s:\n{log.read_text(errors='replace')[-4000:]}")


def client(ccm: CcmServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=ccm.url, api_key="ccm-local", max_retries=0, timeout=60)


# the two ways in: LiteLLM's OpenAI-compatible endpoint (`chat`), its Anthropic-style /v1/messages (`messages`)
WAYS = [("claude-opus-5-5", "litellm/fake-chat"), ("claude-haiku-5-5", "litellm-messages/fake-chat")]


@pytest.mark.parametrize("model, deployment", WAYS)
def test_a_whole_answer(stack: tuple[CcmServer, FakeOpenAI], model: str, deployment: str) -> None:
    ccm, fake = stack
    fake.reset(Reply(text="Hello through LiteLLM.", input_tokens=17, output_tokens=6))
    raw = client(ccm).messages.with_raw_response.create(
        model=model, max_tokens=1024, messages=[{"role": "user", "content": "hi"}])
    message = raw.parse()
    assert raw.headers["x-ccm-deployment"] == deployment
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello through LiteLLM."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 17 and message.usage.output_tokens == 6
    [upstream] = fake.chat_requests()
    assert upstream.json["model"] == "gpt-fake" and upstream.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert fake.rejections == []


@pytest.mark.parametrize("model, deployment", WAYS)
def test_a_stream(stack: tuple[CcmServer, FakeOpenAI], model: str, deployment: str) -> None:
    ccm, fake = stack
    fake.reset(Reply(text="Streamed through LiteLLM, piece by piece.", pieces=6, input_tokens=30, output_tokens=9))
    with client(ccm).messages.stream(model=model, max_tokens=1024,
                                     messages=[{"role": "user", "content": "stream please"}]) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(texts) == "Streamed through LiteLLM, piece by piece." and len(texts) > 1
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 9
    [upstream] = fake.chat_requests()
    assert upstream.json["stream"] is True
    assert fake.rejections == []


@pytest.mark.parametrize("model, deployment", WAYS)
@pytest.mark.parametrize("streamed", [False, True])
def test_tool_calls(stack: tuple[CcmServer, FakeOpenAI], model: str, deployment: str, streamed: bool) -> None:
    ccm, fake = stack
    fake.reset(Reply(text="Let me look.", tool_calls=(ToolCall("get_weather", {"city": "Paris"}, "call_paris"),)))
    request = dict(model=model, max_tokens=1024, tools=[WEATHER],
                   messages=[{"role": "user", "content": "Weather in Paris?"}])
    if streamed:
        with client(ccm).messages.stream(**request) as stream:  # type: ignore[arg-type]
            message = stream.get_final_message()
    else:
        message = client(ccm).messages.create(**request)  # type: ignore[arg-type]
    tool_uses = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert [(t.name, t.input) for t in tool_uses] == [("get_weather", {"city": "Paris"})]
    [upstream] = fake.chat_requests()
    assert [t["function"]["name"] for t in upstream.json["tools"]] == ["get_weather"]

    # the tool's result goes back the same way
    fake.reset(Reply(text="It is sunny in Paris."))
    answer = client(ccm).messages.create(  # type: ignore[call-overload]
        model=model, max_tokens=1024, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": [block.model_dump() for block in message.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_uses[0].id,
                                                "content": "sunny, 24°C"}]}])
    assert answer.content[0].text == "It is sunny in Paris."
    [upstream] = fake.chat_requests()
    tool_message = [m for m in upstream.json["messages"] if m["role"] == "tool"]
    assert len(tool_message) == 1 and "sunny" in str(tool_message[0]["content"])
    assert fake.rejections == []
