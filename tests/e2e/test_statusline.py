"""`ccm statusline` against a real `ccm run`, fed the status JSON Claude Code 2.1.328 writes on its stdin: the line
names the rule, alias and deployment that served the session's last request and its tokens; it knows only the
caller's own sessions; without a router it says so. Run as Claude Code runs it once installed (`PYTHON -I -S
…/statusline.py`) and as `ccm statusline`."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ccm.claude_settings import statusline_command
from tests.conftest import load_fixture
from tests.fakes import CcmServer, FakeOpenAI, Reply, free_port, serve
from tests.fakes.ccm_server import REPO

KEY = "sk-statusline-openai"
CLIENT_KEY = "ccm-statusline-key"
ROUTES = """
settings {
  auth env("CCM_API_KEY")
}
provider deepseek {
  type openai
  url  env("OPENAI_BASE_URL")
  key  env("OPENAI_API_KEY")
}
model main = deepseek/deepseek-chat {
  max_output 8k
  price input 0.27 output 1.10
}
model quick = deepseek/deepseek-lite {
  max_output 8k
}
route {
  subagent -> quick
  default  -> main
}
"""


def claude_code_status(session_id: str) -> dict[str, Any]:
    """What Claude Code 2.1.328 writes on the statusLine command's stdin (LEDGER-ANCHORS §6)."""
    return {
        "hook_event_name": "Status",
        "session_id": session_id,
        "transcript_path": f"/root/.claude/projects/-work/{session_id}.jsonl",
        "cwd": "/work",
        "model": {"id": "claude-opus-5-5", "display_name": "Opus 5.5"},
        "workspace": {"current_dir": "/work", "project_dir": "/work"},
        "version": "2.1.328",
        "output_style": {"name": "default"},
        "cost": {"total_cost_usd": 0.0421, "total_duration_ms": 5120, "total_api_duration_ms": 2310,
                 "total_lines_added": 12, "total_lines_removed": 3},
        "exceeds_200k_tokens": False,
        "context_window": {"total_input_tokens": 21000, "total_output_tokens": 480, "context_window_size": 200000,
                           "used_percentage": 10.5, "remaining_percentage": 89.5,
                           "current_usage": {"input_tokens": 2, "output_tokens": 20,
                                             "cache_creation_input_tokens": 12145, "cache_read_input_tokens": 7276}},
        "rate_limits": {"five_hour": {"used_percentage": 12, "resets_at": 1767225600}},
    }


def session_of(fixture: dict[str, Any]) -> str:
    session = json.loads(fixture["body"]["metadata"]["user_id"])["session_id"]
    assert isinstance(session, str)
    return session


def statusline(status: Any, env: dict[str, str], installed: bool = True) -> tuple[str, float]:
    """The printed line, and how long the process took, run as Claude Code runs the installed command."""
    command = (statusline_command() if installed
               else f"{sys.executable} -c 'from ccm.cli.entry import main; main()' statusline")
    stdin = status if isinstance(status, bytes) else json.dumps(status).encode()
    started = time.perf_counter()
    done = subprocess.run(command, shell=True, input=stdin, capture_output=True, env={"PATH": "/usr/bin:/bin", **env},
                          cwd=REPO, timeout=30)
    took = time.perf_counter() - started
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0], took


def test_the_line_shows_what_really_served_the_session(tmp_path: Path) -> None:
    subagent = load_fixture("subagent-request.json")
    session = session_of(subagent)
    with serve(FakeOpenAI(KEY, default=Reply(text="ok", input_tokens=12400, output_tokens=456, cached_tokens=8100))) \
            as (url, fake):
        env = {"OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": KEY, "CCM_API_KEY": CLIENT_KEY}
        with CcmServer.from_text(tmp_path, ROUTES, env) as ccm:
            claude_env = {"ANTHROPIC_BASE_URL": ccm.url, "ANTHROPIC_API_KEY": CLIENT_KEY}
            line, _ = statusline(claude_code_status(session), claude_env)
            assert line == "ccm · no request from this session yet · claude: Opus 5.5"

            headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
            for name in ("interactive-first-turn.json", "subagent-request.json"):
                response = httpx.post(f"{ccm.url}/v1/messages", json=load_fixture(name)["body"], headers=headers,
                                      timeout=30)
                assert response.status_code == 200, response.text
            # each answer of `main` (priced) costs this; `quick` has no price, so its requests add nothing known
            cost = (4300 * 0.27 + 8100 * 0.27 + 456 * 1.10) / 1e6
            # the captures may share one session: the first turn (routed to main) is then part of its cost
            shared = session_of(load_fixture("interactive-first-turn.json")) == session
            line, _ = statusline(claude_code_status(session), claude_env)
            so_far = f" · session ${cost:.4f}" if shared else ""  # the ledger's sum of the session's priced rows
            assert line == ("ccm quick ← subagent · deepseek/deepseek-lite · 12.4k in (8.1k cached) / 456 out"
                            f"{so_far}")

            # a priced model: the line shows the request's cost, and the session's in the ledger
            httpx.post(f"{ccm.url}/v1/messages", headers=headers, timeout=30, json={
                "model": "claude-opus-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}],
                "metadata": subagent["body"]["metadata"]})
            line, _ = statusline(claude_code_status(session), claude_env)
            total = cost * (2 if shared else 1)
            assert line == (f"ccm main ← default · deepseek/deepseek-chat · 12.4k in (8.1k cached) / 456 out"
                            f" · ${cost:.4f} · session ${total:.4f}")

            # `ccm statusline` (the console script's way) prints the same line
            assert statusline(claude_code_status(session), claude_env, installed=False)[0] == line

            # another key, or none, learns nothing about the session
            assert statusline(claude_code_status(session), {"ANTHROPIC_BASE_URL": ccm.url,
                                                             "ANTHROPIC_API_KEY": "wrong"})[0].startswith(
                "ccm: the router refused the key")

            timings = [statusline(claude_code_status(session), claude_env)[1] for _ in range(10)]
            print(f"statusline: median {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms")
            # (50 ms on a quiet machine: docs/statusline.md; this catches hangs)
            assert statistics.median(timings) < 1.0
        assert fake.rejections == []


def test_without_a_router_the_line_says_so() -> None:
    env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    line, took = statusline(claude_code_status("438f2556-0f1f-499d-90cb-ac5e6d7acc43"), env)
    assert line.startswith("ccm: no router at 127.0.0.1:") and line.endswith("· claude: Opus 5.5")


def test_whatever_claude_code_sends_the_line_is_printed() -> None:
    env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    for status in (b"", b"not json", b"[1, 2]", b"null", {"session_id": 42, "model": "opus"},
                   {"model": {"display_name": None}}, {"session_id": "s", "model": {"id": "x"}, "new_field": {"a": 1}},
                   {"session_id": "\x1b[31mred\x1b[0m"}):
        line, _ = statusline(status, env)
        assert line.startswith("ccm") and "\x1b" not in line
