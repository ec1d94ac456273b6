"""`ccm run`, `ccm code`, `ccm env` as real processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

CCM = [sys.executable, "-c", "from ccm.cli.main import main; main()"]

ROUTES = textwrap.dedent(
    """\
    provider anth {
      type anthropic
      url  env("CCM_TEST_UPSTREAM", "http://127.0.0.1:9")
      key  env("CCM_TEST_UNSET_KEY_A")
    }
    provider other {
      type openai
      url  "http://127.0.0.1:9/v1"
      key  env("CCM_TEST_UNSET_KEY_B")
    }
    model main  = anth/claude-x
    model cheap = other/gpt-x
    route {
      background -> cheap
      default    -> main
    }
    """
)
AUTH = 'settings {\n  auth env("CCM_TEST_INBOUND")\n}\n'


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test runner's environment without its own Claude credentials or settings (HOME is the test's folder)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CCM_TEST_", "ANTHROPIC_", "CLAUDE_")) and k not in ("CCM_ROUTES", "XDG_CONFIG_HOME")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A `ccm run` subprocess; its stderr lines are collected on a thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [*CCM, "run", *args], cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, seconds: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.seen)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.ccm"
    path.write_text(ROUTES)
    return path


def test_run_starts_with_unset_keys_warning_once_per_provider(routes, tmp_path):
    served = Served([str(routes), "--port", "0"], environment(tmp_path), tmp_path)
    try:
        url = "http://" + served.wait_for(r"listening on http://(\S+)").group(1)
        health = httpx.get(f"{url}/health", timeout=5)
        ready = time.monotonic() - served.started
        assert health.json()["providers"] == {
            "anth": {"type": "anthropic", "configured": False},
            "other": {"type": "openai", "configured": False},
        }
        response = httpx.post(
            f"{url}/v1/messages",
            json={"model": "claude-opus-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
            timeout=5,
        )
        assert response.status_code == 424  # a setup problem, as Claude Code shows it
        assert "CCM_TEST_UNSET_KEY_A" in response.json()["error"]["message"]
        served.wait_for(r"POST /v1/messages .*status=424")
    finally:
        assert served.stop() == 0
    warnings = [line for line in served.seen if "WARNING ccm: provider" in line]
    assert len(warnings) == 2, served.seen
    # at start, each variable is named once, in one line (not again as the compiler's warning)
    startup = served.seen[: next(i for i, line in enumerate(served.seen) if "listening on" in line)]
    for name in ("CCM_TEST_UNSET_KEY_A", "CCM_TEST_UNSET_KEY_B"):
        assert sum(name in line for line in startup) == 1, startup
    assert any("CCM_TEST_UNSET_KEY_A" in w for w in warnings) and any("CCM_TEST_UNSET_KEY_B" in w for w in warnings)
    print(f"ccm run: process start to /health answered in {ready * 1000:.0f} ms")


def test_run_refuses_a_public_host_without_auth(routes, tmp_path):
    result = subprocess.run(
        [*CCM, "run", str(routes), "--host", "0.0.0.0", "--port", "0"],
        cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr and "auth" in result.stderr


def test_run_with_auth_on_a_public_host_requires_the_key(routes, tmp_path):
    routes.write_text(AUTH + ROUTES)
    served = Served(
        [str(routes), "--host", "0.0.0.0", "--port", "0"], environment(tmp_path, CCM_TEST_INBOUND="inbound-1"), tmp_path
    )
    try:
        port = served.wait_for(r"listening on http://\S+:(\d+)").group(1)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"x-api-key": "inbound-1"}, timeout=5).status_code == 200
    finally:
        served.stop()
    assert not any("inbound-1" in line for line in served.seen)


def test_run_reports_compile_errors_and_exits_1(tmp_path):
    broken = tmp_path / "broken.ccm"
    broken.write_text(ROUTES.replace("default    -> main", "default    -> mian"))
    result = subprocess.run(
        [*CCM, "run", str(broken)], cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "broken.ccm:" in result.stderr and "mian" in result.stderr


def test_env_prints_exports_without_printing_keys(routes, tmp_path):
    plain = subprocess.run(
        [*CCM, "env", str(routes), "--port", "4000"], cwd=tmp_path, env=environment(tmp_path),
        capture_output=True, text=True, timeout=30,
    )
    # no credentials of the user's own: the placeholder, which ccm drops, so that Claude Code starts
    assert plain.stdout.splitlines() == [
        "export ANTHROPIC_BASE_URL=http://127.0.0.1:4000",
        "export ANTHROPIC_API_KEY=ccm-local",
    ]
    routes.write_text(AUTH + ROUTES)
    with_auth = subprocess.run(
        [*CCM, "env", str(routes), "--port", "4000"], cwd=tmp_path,
        env=environment(tmp_path, CCM_TEST_INBOUND="secret-inbound", ANTHROPIC_API_KEY="sk-ant-user-own"),
        capture_output=True, text=True, timeout=30,
    )
    # ccm's own key in a header of its own; the user's ANTHROPIC_API_KEY is left alone
    assert with_auth.stdout.splitlines() == [
        "export ANTHROPIC_BASE_URL=http://127.0.0.1:4000",
        'export ANTHROPIC_CUSTOM_HEADERS="x-ccm-key: ${CCM_TEST_INBOUND}"',
    ]
    assert "secret-inbound" not in with_auth.stdout + with_auth.stderr


def fake_claude(tmp_path: Path) -> Path:
    script = tmp_path / "claude"
    script.write_text(
        "#!/bin/sh\n"
        'echo "url=$ANTHROPIC_BASE_URL key=$ANTHROPIC_API_KEY headers=$ANTHROPIC_CUSTOM_HEADERS args=$*"\n'
        "exit 7\n"
    )
    script.chmod(0o755)
    return script


def stop_listed_routers(tmp_path: Path) -> None:
    for state in (tmp_path / "cache" / "ccm" / "routers").glob("*.json"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(json.loads(state.read_text())["pid"], signal.SIGTERM)


def test_code_starts_the_router_and_runs_claude_through_it(routes, tmp_path):
    routes.write_text(AUTH + ROUTES)
    port = free_port()
    env = environment(tmp_path, CCM_CLAUDE=str(fake_claude(tmp_path)), CCM_TEST_INBOUND="inbound-2")
    result = subprocess.run(
        [*CCM, "code", "--port", str(port), str(routes), "--", "-p", "hello there"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    try:
        assert result.returncode == 7, result.stderr
        # the `--` is ccm's, not claude's
        assert (f"url=http://127.0.0.1:{port} key=ccm-local headers=x-ccm-key: inbound-2 args=-p hello there"
                in result.stdout)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        assert (tmp_path / "cache" / "ccm" / f"ccm-{port}.log").is_file()
        # a second run finds the router serving this file (without --port too) and does not start another
        again = subprocess.run(
            [*CCM, "code", str(routes), "--", "--version"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
        assert again.returncode == 7 and "router started" not in again.stderr, again.stderr
        assert f"url=http://127.0.0.1:{port} " in again.stdout and "args=--version" in again.stdout
        assert "warning" not in again.stderr  # the running router has said it at its start
    finally:
        stop_listed_routers(tmp_path)


def test_code_never_takes_another_server_for_its_router(routes, tmp_path):
    """Whatever answers 200 on /health at the default port (here a stand-in, unless something already listens
    there) is not a ccm serving this file: `ccm code` starts its own on a free port and says so; with `--port`
    naming a taken port it stops."""
    from ccm.cli.serve import DEFAULT_PORT

    with contextlib.ExitStack() as stack:
        if not port_in_use(DEFAULT_PORT):
            stack.enter_context(health_server(DEFAULT_PORT))
        env = environment(tmp_path, CCM_CLAUDE=str(fake_claude(tmp_path)))
        try:
            started = subprocess.run([*CCM, "code", str(routes), "--", "-p", "hi"], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=60)
            assert started.returncode == 7, started.stderr
            assert f"port {DEFAULT_PORT} is taken by another" in started.stderr
            assert f"url=http://127.0.0.1:{DEFAULT_PORT} " not in started.stdout and "args=-p hi" in started.stdout
            refused = subprocess.run([*CCM, "code", "--port", str(DEFAULT_PORT), str(routes)], cwd=tmp_path,
                                     env=env, capture_output=True, text=True, timeout=60)
            assert refused.returncode == 1 and f"port {DEFAULT_PORT} is taken by another" in refused.stderr
            assert "url=" not in refused.stdout
        finally:
            stop_listed_routers(tmp_path)


def test_split_code_args():
    from ccm.cli.serve import split_code_args

    assert split_code_args(("team.ccm", "--", "-p", "hi")) == ("team.ccm", ["-p", "hi"])
    assert split_code_args(("-p", "hi")) == (None, ["-p", "hi"])  # the file is looked up (ccm.cli.route_file)
    assert split_code_args(("team.ccm", "--", "--", "x")) == ("team.ccm", ["--", "x"])


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def health_server(port: int) -> Iterator[None]:
    """Any server that answers 200 on /health (claude-code-router does)."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
