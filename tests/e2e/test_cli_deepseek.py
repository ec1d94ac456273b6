"""`examples/deepseek-thinking.ccm`, run as is, against the DeepSeek fake (tests/fakes/fake_deepseek.py).

The fake enforces DeepSeek's thinking-mode contract: every assistant message of a turn that called tools carries
`reasoning_content` in every later request, max_tokens within [1, 32768] for deepseek-reasoner, no `tool_choice`.
So the real Claude Code CLI finishing a Bash round trip proves, with the real client, that ccm replays the reasoning
Claude Code kept as a thinking block; the SDK tests pin the details; and the same file with one of its settings
removed makes the fake refuse the very same request, which proves that setting is what makes it work.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import CcmServer, Exchange, Reply, ToolCall
from tests.fakes.fake_deepseek import FakeDeepSeek

from .conftest import Stack, start_stack
from .test_e2e_claude_cli import EXAMPLES, claude_output, run_claude, workdir  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.slow  # the real Claude Code CLI or real `ccm run`s: seconds each

DEEPSEEK_KEY = "sk-e2e-deepseek"
ENV = {"DEEPSEEK_BASE_URL": "{url}/v1", "DEEPSEEK_API_KEY": DEEPSEEK_KEY}
ROUTES = (EXAMPLES / "deepseek-thinking.ccm").read_text()
REASONER_CAP = 32000  # the file's `max_output 32k`; DeepSeek itself refuses above 32768
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}


def without(line: str) -> str:
    """The example with one of its settings removed (the line must be there, or the control proves nothing)."""
    assert f"  {line}\n" in ROUTES, line
    return ROUTES.replace(f"  {line}\n", "")


@pytest.fixture(scope="module")
def deepseek_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("cli-deepseek"), ROUTES, FakeDeepSeek(DEEPSEEK_KEY), ENV)


@pytest.fixture
def deepseek(deepseek_module: Stack) -> Iterator[Stack]:
    yield from deepseek_module.for_one_test()


def chats(stack: Stack) -> list[dict[str, Any]]:
    return [e.json for e in stack.fake.requests("/v1/chat/completions")]


def tool_outputs(exchange: Exchange) -> list[str]:
    return [m["content"] for m in exchange.messages if m.get("role") == "tool"]


def bash_scenario(marker: str, final_reasoning: str) -> Any:
    """Turn 1 (Bash offered, no result yet): reason, then call Bash. Turn 2: reason (or not), then quote the output."""

    def scenario(exchange: Exchange) -> Reply:
        outputs = tool_outputs(exchange)
        if outputs:
            return Reply(reasoning=final_reasoning, text=f"The tool said: {outputs[-1].strip()}")
        if any(t["function"]["name"] == "Bash" for t in exchange.json.get("tools", ())):
            bash = ToolCall("Bash", {"command": f"echo {marker}", "description": "Print the marker"})
            return Reply(reasoning=f"The user wants {marker} printed; Bash with echo does it.", text="Running it.",
                         tool_calls=(bash,), pieces=4)
        return Reply(text="A side answer.")

    return scenario


def run_claude_events(claude: Path, ccm: CcmServer, cwd: Path, prompt: str, *flags: str) -> list[dict[str, Any]]:
    """`claude -p … --output-format stream-json --verbose`: every message the CLI kept, thinking blocks included."""
    stdout, report = claude_output(claude, ccm, cwd, prompt, "--output-format", "stream-json", "--verbose", *flags)
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    result = events[-1]
    assert result["type"] == "result" and result["is_error"] is False, report
    return events


def blocks(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [b for e in events if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == kind]


# --- the fake refuses what DeepSeek refuses (what makes the controls below meaningful) --------------------------------


def test_the_fake_refuses_like_deepseek(deepseek: Stack) -> None:
    url = deepseek.ccm.env["DEEPSEEK_BASE_URL"]
    call = {"id": "call_00_a", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}
    tools = [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]

    def post(messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
        body = {"model": "deepseek-reasoner", "messages": messages, "tools": tools, **extra}
        return httpx.post(f"{url}/chat/completions", json=body, headers={"authorization": f"Bearer {DEEPSEEK_KEY}"})

    def refusal(response: httpx.Response) -> str:
        assert response.status_code == 400, response.text
        return str(response.json()["error"]["message"])

    tool_turn = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"},
                 {"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": "call_00_a", "content": "ok"}]
    missing = "Missing `reasoning_content` field in the assistant message at message index 2."
    assert refusal(post(tool_turn)).startswith(missing)
    tool_turn[2]["reasoning_content"] = ""  # present, even empty, is enough
    assert post(tool_turn).status_code == 200
    # The turn's final text answer needs it too, in every later request; a turn without tool calls does not.
    later = [*tool_turn, {"role": "assistant", "content": "done"}, {"role": "user", "content": "and now?"}]
    assert "message index 4" in refusal(post(later))
    assert post([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "again"}]).status_code == 200
    first = [{"role": "user", "content": "go"}]
    cap = "Invalid max_tokens value, the valid range of max_tokens is [1, 32768]"
    assert refusal(post(first, max_tokens=128000)) == cap
    assert refusal(post(first, tool_choice="required")) == "deepseek-reasoner does not support this tool_choice"


# --- the real Claude Code CLI -----------------------------------------------------------------------------------------


def test_bash_round_trip_replays_the_reasoning(claude_bin: Path, deepseek: Stack, workdir: Path) -> None:  # noqa: F811
    marker = f"ccm-e2e-{random.randrange(32768)}"
    final_reasoning = "The command printed the marker; quote it back."
    deepseek.fake.default = bash_scenario(marker, final_reasoning)
    events = run_claude_events(claude_bin, deepseek.ccm, workdir, f"Run echo {marker}", "--allowedTools", "Bash")
    assert marker in events[-1]["result"]
    assert deepseek.fake.rejections == []
    sent = chats(deepseek)
    assert {body["model"] for body in sent} == {"deepseek-reasoner"}  # `thinking and not image -> reasoner`
    assert {body["max_tokens"] for body in sent} == {REASONER_CAP}  # Claude Code asked for 128000
    # The thinking text reached Claude Code as thinking blocks, before the text and the tool call of each turn.
    thinking = [b["thinking"] for b in blocks(events, "thinking")]
    assert thinking == [f"The user wants {marker} printed; Bash with echo does it.", final_reasoning]
    # ... and Claude Code's second request carried the first turn's reasoning back to DeepSeek on the tool-call turn.
    messages = sent[-1]["messages"]
    roles = [m["role"] for m in messages]
    assistant = messages[roles.index("tool") - 1]
    assert assistant["tool_calls"][0]["function"]["name"] == "Bash"
    assert assistant["reasoning_content"] == thinking[0]
    assert marker in tool_outputs(deepseek.fake.requests("/v1/chat/completions")[-1])[-1]


def test_a_continued_session_keeps_every_tool_turn_valid(claude_bin: Path, deepseek: Stack, workdir: Path) -> None:  # noqa: F811
    """DeepSeek wants `reasoning_content` on every assistant message of a tool-calling turn in every later request,
    the turn's final answer included, even when that answer came without reasoning (so Claude Code kept no
    thinking block for it): `claude --continue` sends that history back."""
    marker = f"ccm-e2e-{random.randrange(32768)}"
    deepseek.fake.default = bash_scenario(marker, final_reasoning="")
    run_claude(claude_bin, deepseek.ccm, workdir, f"Run echo {marker}", "--allowedTools", "Bash")
    deepseek.fake.default = Reply(reasoning="A follow-up.", text="Still here.")
    result = run_claude(claude_bin, deepseek.ccm, workdir, "Anything else?", "--continue", "--allowedTools", "Bash")
    assert result["result"] == "Still here."
    assert deepseek.fake.rejections == []
    messages = chats(deepseek)[-1]["messages"]
    answer = next(m for m in messages if m["role"] == "assistant" and marker in str(m.get("content")))
    assert answer["reasoning_content"] == ""  # no thinking to replay, but the field DeepSeek checks is there


# --- through the SDK --------------------------------------------------------------------------------------------------


def tool_history(thinking: str) -> list[dict[str, Any]]:
    """A conversation in the middle of a tool loop, as Claude Code sends it: the reasoning kept as a thinking block."""
    return [
        {"role": "user", "content": "List the files."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": thinking, "signature": ""},
            {"type": "tool_use", "id": "call_00_ls", "name": "Bash", "input": {"command": "ls"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_00_ls", "content": "a.txt"}]},
    ]


THINKING = {"type": "enabled", "budget_tokens": 4000}


def test_thinking_block_and_cache_usage_through_the_sdk(deepseek: Stack) -> None:
    deepseek.fake.script(Reply(reasoning="Two files, so answer briefly.", text="There is a.txt.", pieces=5,
                               input_tokens=900, cached_tokens=640, output_tokens=30))
    with deepseek.client().messages.stream(model="claude-opus-5-5", max_tokens=128000, thinking=THINKING,
                                           tools=[BASH], messages=tool_history("ls lists them.")) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Two files, so answer briefly."  # type: ignore[union-attr]
    assert message.content[1].text == "There is a.txt."  # type: ignore[union-attr]
    # DeepSeek reports its cache in prompt_cache_hit_tokens only; prompt_tokens includes the hits.
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (260, 640, 30)
    sent = chats(deepseek)[-1]
    assert sent["model"] == "deepseek-reasoner" and sent["max_tokens"] == REASONER_CAP
    assert sent["messages"][1]["reasoning_content"] == "ls lists them."


@pytest.mark.parametrize("setting", ["quirks     replay_reasoning", "drop       tool_choice"])
def test_without_the_setting_deepseek_refuses(setting: str, tmp_path: Path) -> None:
    """The negative controls: each request below succeeds with the example (previous tests) and is refused by
    DeepSeek once the file loses the one setting that handles it."""
    if setting.startswith("quirks"):
        request: dict[str, Any] = {"tools": [BASH], "messages": tool_history("ls lists them.")}
        refusal = "Missing `reasoning_content` field in the assistant message at message index 1."
    else:
        request = {"tools": [BASH], "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "List."}]}
        refusal = "deepseek-reasoner does not support this tool_choice"
    for routes, refused in ((ROUTES, False), (without(setting), True)):
        fake = FakeDeepSeek(DEEPSEEK_KEY, default=Reply(reasoning="ok", text="Done."))
        folder = tmp_path / f"refused-{refused}"
        folder.mkdir()
        for stack in start_stack(folder, routes, fake, ENV):
            client = stack.client()
            if refused:
                with pytest.raises(anthropic.BadRequestError) as error:
                    client.messages.create(model="claude-opus-5-5", max_tokens=8000, thinking=THINKING, **request)
                assert refusal in error.value.message
                assert fake.rejections and refusal in fake.rejections[0]
            else:
                message = client.messages.create(model="claude-opus-5-5", max_tokens=8000, thinking=THINKING, **request)
                assert message.content[-1].text == "Done."  # type: ignore[union-attr]
                assert fake.rejections == []
            stack.check_healthy()
