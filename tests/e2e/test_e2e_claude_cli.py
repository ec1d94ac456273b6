"""The real Claude Code CLI (`@anthropic-ai/claude-code@2.1.328`) → `ccm run examples/….ccm` → a strict fake.

`claude -p … --output-format json` runs with a throwaway HOME and working directory, `--allowedTools` instead of
`--dangerously-skip-permissions` (the suite may run as root, where that flag is refused), and a 120 s timeout so
a hang fails instead of blocking CI. The CLI comes from `make claude-cli` (cached outside the clone); a missing
CLI fails the test with that instruction.

What Claude Code 2.1.328 sends in print mode, with CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1: one streaming
`POST /v1/messages?beta=true` per turn (model `claude-opus-5-5`, `thinking: adaptive`, `max_tokens` 128000, a
`system`-role message after the first user message, 12 tools), and for a subagent the subagent's own requests
(`cc_is_subagent=true` in the first system block) interleaved with its parent's. No count_tokens, no
`/v1/models`, no haiku side requests were seen; the fakes' scenario functions answer any request anyway (a short
text when nothing matches), so a side request can never take a scripted turn.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import CcmServer, Exchange, FakeAnthropic, FakeOpenAI, Reply, ToolCall

from .conftest import ANTHROPIC_KEY, CLIENT_KEY, OPENAI_KEY, Stack, start_stack

pytestmark = pytest.mark.slow  # the real Claude Code CLI or real `ccm run`s: seconds each

# the pinned version; CLAUDE_CODE_VERSION (which scripts/install-claude-cli.sh also reads) tries another
CLAUDE_VERSION = os.environ.get("CLAUDE_CODE_VERSION", "2.1.328")
CLI_TIMEOUT = 120
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def cli_openai_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"OPENAI_BASE_URL": "{url}/v1", "OPENAI_API_KEY": OPENAI_KEY}
    routes = (EXAMPLES / "openai-compatible.ccm").read_text()
    yield from start_stack(tmp_path_factory.mktemp("cli-openai"), routes, FakeOpenAI(OPENAI_KEY), env)


@pytest.fixture(scope="module")
def cli_anthropic_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"ANTHROPIC_UPSTREAM_URL": "{url}", "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    routes = (EXAMPLES / "anthropic.ccm").read_text()
    yield from start_stack(tmp_path_factory.mktemp("cli-anthropic"), routes, FakeAnthropic(ANTHROPIC_KEY), env)


@pytest.fixture
def cli_openai(cli_openai_module: Stack) -> Iterator[Stack]:
    yield from cli_openai_module.for_one_test()


@pytest.fixture
def cli_anthropic(cli_anthropic_module: Stack) -> Iterator[Stack]:
    yield from cli_anthropic_module.for_one_test()


def run_claude(claude: Path, ccm: CcmServer, workdir: Path, prompt: str, *flags: str) -> dict[str, Any]:
    """`claude -p … --output-format json`: the run's result object."""
    stdout, report = claude_output(claude, ccm, workdir, prompt, "--output-format", "json", *flags)
    result: dict[str, Any] = json.loads(stdout)
    assert result["is_error"] is False and result["subtype"] == "success", report
    return result


def claude_output(claude: Path, ccm: CcmServer, workdir: Path, prompt: str, *options: str) -> tuple[str, str]:
    """`claude -p prompt *options` against `ccm`, in `workdir` with a throwaway HOME beside it: its stdout, and the
    report a failed assertion shows (exit, output, ccm's log). A timeout or a non-zero exit fails the test."""
    home = workdir.parent / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": ccm.url,
        "ANTHROPIC_API_KEY": CLIENT_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    command = [str(claude), "-p", prompt, *options]
    try:
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"claude did not finish within {CLI_TIMEOUT} s: {timeout.stderr!r}\nccm log:\n{ccm.logs()}")
    report = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}\nccm log:\n{ccm.logs()}"
    assert done.returncode == 0, report
    return done.stdout, report


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


# --- scenario functions: what the fake upstream answers, decided from each request --------------------------------


def openai_tool_outputs(exchange: Exchange) -> list[str]:
    outputs = []
    for message in exchange.messages:
        if message.get("role") == "tool":
            content = message["content"]
            outputs.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
    return outputs


def anthropic_tool_outputs(exchange: Exchange) -> list[str]:
    outputs = []
    for message in exchange.messages:
        if message.get("role") != "user" or isinstance(message["content"], str):
            continue
        for block in message["content"]:
            if block.get("type") == "tool_result":
                content = block.get("content", "")
                outputs.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
    return outputs


def offers_tool(exchange: Exchange, name: str) -> bool:
    """Whether the request offers tool `name`, in either protocol's tool shape."""
    for tool in exchange.json.get("tools") or []:
        if tool.get("name") == name or (tool.get("function") or {}).get("name") == name:
            return True
    return False


def call_then_quote(call: ToolCall, outputs: Callable[[Exchange], list[str]]) -> Callable[[Exchange], Reply]:
    """First turn: ask for `call`. Once a tool result is in the conversation: quote it in the final answer."""

    def scenario(exchange: Exchange) -> Reply:
        results = outputs(exchange)
        if results:
            return Reply(text=f"The tool said: {results[-1].strip()}")
        if offers_tool(exchange, call.name):
            return Reply(text="Let me do that.", tool_calls=(call,), pieces=4)
        return Reply(text="A side answer.")

    return scenario


def is_subagent(exchange: Exchange) -> bool:
    """A subagent's request. The billing-header system block that marks it (`cc_is_subagent=true`) is
    Anthropic-specific and the OpenAI translation drops it, so the subagent's own system prompt identifies it."""
    first = json.dumps(exchange.messages[:1])
    return "cc_is_subagent=true" in exchange.raw.decode() or "You are an agent for Claude Code" in first


def png(width: int = 8, height: int = 8) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([200, 40, 40]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# --- the cases ---------------------------------------------------------------------------------------------------


def test_plain_answer(claude_bin: Path, cli_openai: Stack, workdir: Path) -> None:
    cli_openai.fake.default = Reply(text="Hello from the fake, through ccm.")
    result = run_claude(claude_bin, cli_openai.ccm, workdir, "Say hello")
    assert result["result"] == "Hello from the fake, through ccm."
    assert cli_openai.fake.rejections == []
    sent = cli_openai.fake.requests("/v1/chat/completions")[0].json
    assert sent["stream"] is True and sent["messages"][0]["role"] == "system"


def test_bash_round_trip(claude_bin: Path, cli_openai: Stack, workdir: Path) -> None:
    marker = f"ccm-e2e-{random.randrange(32768)}"
    bash = ToolCall("Bash", {"command": f"echo {marker}", "description": "Print the marker"})
    cli_openai.fake.default = call_then_quote(bash, openai_tool_outputs)
    result = run_claude(claude_bin, cli_openai.ccm, workdir, f"Run echo {marker}", "--allowedTools", "Bash")
    assert marker in result["result"]
    assert cli_openai.fake.rejections == []
    final = cli_openai.fake.requests("/v1/chat/completions")[-1].json["messages"]
    roles = [m["role"] for m in final]
    tool = final[roles.index("tool")]
    assistant = final[roles.index("tool") - 1]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == tool["tool_call_id"]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"])["command"] == f"echo {marker}"
    assert marker in openai_tool_outputs(cli_openai.fake.requests("/v1/chat/completions")[-1])[-1]


def test_bash_round_trip_passthrough(claude_bin: Path, cli_anthropic: Stack, workdir: Path) -> None:
    marker = f"ccm-e2e-{random.randrange(32768)}"
    bash = ToolCall("Bash", {"command": f"echo {marker}", "description": "Print the marker"})
    cli_anthropic.fake.default = call_then_quote(bash, anthropic_tool_outputs)
    result = run_claude(claude_bin, cli_anthropic.ccm, workdir, f"Run echo {marker}", "--allowedTools", "Bash")
    assert marker in result["result"]
    assert cli_anthropic.fake.rejections == []
    turns = cli_anthropic.fake.requests("/v1/messages")
    assert len(turns) >= 2 and all(e.headers["x-api-key"] == ANTHROPIC_KEY for e in turns)
    assert "claude-code-20250219" in turns[-1].headers.get("anthropic-beta", "")


def test_read_an_image(claude_bin: Path, cli_openai: Stack, workdir: Path) -> None:
    picture = workdir / "pixel.png"
    picture.write_bytes(png())
    read = ToolCall("Read", {"file_path": str(picture)})
    cli_openai.fake.default = call_then_quote(read, openai_tool_outputs)
    run_claude(claude_bin, cli_openai.ccm, workdir, "Describe pixel.png", "--allowedTools", "Read")
    assert cli_openai.fake.rejections == []
    final = cli_openai.fake.requests("/v1/chat/completions")[-1].json["messages"]
    roles = [m["role"] for m in final]
    assert "tool" in roles, roles
    follower = final[roles.index("tool") + 1]
    assert follower["role"] == "user"
    images = [p for p in follower["content"] if isinstance(p, dict) and p.get("type") == "image_url"]
    assert images and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_subagent(claude_bin: Path, cli_openai: Stack, workdir: Path) -> None:
    report = f"SUBAGENT-REPORT-{random.randrange(32768)}"
    agent = ToolCall(
        "Agent",
        {"description": "Inspect the folder", "prompt": "Report back with one line.",
         "subagent_type": "general-purpose", "run_in_background": False},
    )
    parent = call_then_quote(agent, openai_tool_outputs)

    def scenario(exchange: Exchange) -> Reply:
        return Reply(text=report) if is_subagent(exchange) else parent(exchange)

    cli_openai.fake.default = scenario
    result = run_claude(claude_bin, cli_openai.ccm, workdir, "Use a subagent to inspect the folder",
                        "--allowedTools", "Agent")
    assert report in result["result"]
    assert cli_openai.fake.rejections == []
    requests = cli_openai.fake.requests("/v1/chat/completions")
    assert any(is_subagent(e) for e in requests), "Claude Code never started the subagent"
    # examples/openai-compatible.ccm routes `subagent -> fast` (gpt-5-mini) and the main agent to `big` (gpt-5).
    assert {e.json["model"] for e in requests if is_subagent(e)} == {"gpt-5-mini"}
    assert {e.json["model"] for e in requests if not is_subagent(e)} == {"gpt-5"}
    assert report in openai_tool_outputs(requests[-1])[-1]  # the parent received the subagent's report
