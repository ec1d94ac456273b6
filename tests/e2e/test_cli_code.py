"""`ccm code` with the real Claude Code CLI (2.1.328): the user's own credentials reach Anthropic untouched, ccm's
own key travels in `x-ccm-key`, and the router `ccm code` uses is the one serving the file it was given.

Each test runs `ccm code FILE -- -p … --output-format json` with CCM_CLAUDE pointing at the pinned CLI, a
throwaway HOME (so no login of the machine's user is found) and its own cache folder, where the background router
`ccm code` starts keeps its pid file; the test stops that router at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import CcmServer, FakeAnthropic, free_port, serve
from tests.fakes.ccm_server import CCM_COMMAND, REPO

CLI_TIMEOUT = 120
USER_KEY = "e2e-user-own-api-key"
USER_OAUTH = "e2e-user-subscription-token"
INBOUND = "inbound-e2e-secret"
ROUTES = """
settings {
  auth env("CCM_API_KEY")
}
provider anthropic {
  type anthropic
  url  env("ANTHROPIC_UPSTREAM_URL")
  key  env("ANTHROPIC_API_KEY") or client
}
model opus = anthropic/claude-opus-5-5
route {
  default -> opus
}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A project folder with the route file; every router started in the test is stopped after it."""
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "routes.ccm").write_text(ROUTES)
    yield tmp_path
    stop_routers(tmp_path / "cache" / "ccm")


def stop_routers(cache: Path) -> None:
    for state in cache.glob("routers/*.json"):
        with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
            os.kill(int(json.loads(state.read_text())["pid"]), signal.SIGTERM)


def environment(folder: Path, claude: Path, upstream: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder / "home"),
        "XDG_CACHE_HOME": str(folder / "cache"),
        "XDG_DATA_HOME": str(folder / "data"),
        "PYTHONPATH": str(REPO),
        "CCM_CLAUDE": str(claude),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_UPSTREAM_URL": upstream,
        "CCM_API_KEY": INBOUND,
        **extra,
    }


def ccm_code(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [*CCM_COMMAND, "code", *args]
    try:
        return subprocess.run(command, cwd=folder / "project", env=env, capture_output=True, text=True,
                              timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"ccm code did not finish within {CLI_TIMEOUT} s: {timeout.stderr!r}")


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == 0, report
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["is_error"] is False, report
    return result


@pytest.mark.parametrize("login", ["api_key", "oauth"])
def test_the_users_own_login_reaches_anthropic_untouched(folder: Path, claude_bin: Path, login: str) -> None:
    own = {"ANTHROPIC_API_KEY": USER_KEY} if login == "api_key" else {"CLAUDE_CODE_OAUTH_TOKEN": USER_OAUTH}
    fake = FakeAnthropic(USER_KEY if login == "api_key" else USER_OAUTH)
    with serve(fake) as (url, _):
        env = environment(folder, claude_bin, url, **own)
        done = ccm_code(folder, env, "--port", str(free_port()), "routes.ccm", "--",
                        "-p", "say hi", "--output-format", "json")
        assert result_of(done)["result"]
    sent = [exchange.headers for exchange in fake.exchanges]
    assert sent, "no request reached the upstream"
    for headers in sent:
        assert "x-ccm-key" not in headers and INBOUND not in json.dumps(headers)
        if login == "api_key":
            assert headers["x-api-key"] == USER_KEY
        else:
            assert headers["authorization"] == f"Bearer {USER_OAUTH}" and "x-api-key" not in headers
            assert "oauth-2025-04-20" in headers["anthropic-beta"].split(",")


def test_without_credentials_claude_code_is_told_what_to_set(folder: Path, claude_bin: Path) -> None:
    fake = FakeAnthropic(USER_KEY)
    with serve(fake) as (url, _):
        done = ccm_code(folder, environment(folder, claude_bin, url), "--port", str(free_port()),
                        "-p", "say hi", "--output-format", "json")
    assert not fake.exchanges  # the placeholder never went upstream
    assert "ANTHROPIC_API_KEY is not set" in done.stdout and "log in to Claude Code" in done.stdout, done.stdout
    # shown as the setup problem it is (424), asked once, not "a server-side issue, usually temporary"
    assert "API Error: 424" in done.stdout and "server-side issue" not in done.stdout, done.stdout
    (log,) = (folder / "cache" / "ccm").glob("ccm-*.log")
    assert len(re.findall(r"POST /v1/messages\S* .*status=424", log.read_text())) == 1, log.read_text()


def test_code_runs_the_router_for_the_file_it_was_given(folder: Path, claude_bin: Path) -> None:
    """A ccm serving another file is not taken for this file's router: named with --port, `ccm code` says so and
    stops; otherwise it starts its own router, and Claude Code's requests go there, not to the other."""
    fake, elsewhere = FakeAnthropic(USER_KEY), FakeAnthropic(USER_KEY)
    other = folder / "other.ccm"
    other.write_text(ROUTES)
    with serve(fake) as (url, _), serve(elsewhere) as (other_url, _):
        env = environment(folder, claude_bin, url, ANTHROPIC_API_KEY=USER_KEY)
        with CcmServer(other, {"ANTHROPIC_UPSTREAM_URL": other_url, "CCM_API_KEY": INBOUND}) as squatter:
            refused = ccm_code(folder, env, "--port", str(squatter.port), "routes.ccm", "--", "-p", "say hi")
            assert refused.returncode == 1, refused.stderr
            assert "another ccm router (serving a different route file)" in refused.stderr
            done = ccm_code(folder, env, "routes.ccm", "--", "-p", "say hi", "--output-format", "json")
            assert result_of(done)["result"]
            assert "router started" in done.stderr
    assert fake.exchanges and not elsewhere.exchanges


def test_claude_code_is_told_the_routed_models_window(folder: Path, claude_bin: Path) -> None:
    """`claude --model coder` names a model Claude Code does not know: without CLAUDE_CODE_MAX_CONTEXT_TOKENS it says
    it assumes a 1M-token window (and compacts far too late for this 128k one); ccm code passes the table's."""
    (folder / "project" / "routes.ccm").write_text(ROUTES.replace("model opus", "model coder = anthropic/claude-x {\n"
                                                                  "  context 128k\n}\nmodel opus"))
    fake = FakeAnthropic(USER_KEY)
    with serve(fake) as (url, _):
        env = environment(folder, claude_bin, url, ANTHROPIC_API_KEY=USER_KEY)
        done = ccm_code(folder, env, "--port", str(free_port()), "routes.ccm", "--",
                        "--model", "coder", "-p", "say hi", "--output-format", "json")
        assert result_of(done)["result"]
    assert "doesn't recognize the model" not in done.stdout + done.stderr, done.stderr
    assert fake.exchanges and fake.exchanges[0].json["model"] == "claude-x"  # routed by the direct rule
