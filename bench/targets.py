"""What the harness measures: ccm, claude-code-router, LiteLLM and the upstream, each a process it starts on a free
127.0.0.1 port and stops again.

Every router gets the same routes (ROUTES), selected by the request's `model`: a Claude model name (the fixtures',
the tiny request's) goes to the OpenAI upstream's canned completion; the bench names, written in
claude-code-router's own literal `provider,model` form (which ccm and LiteLLM are configured to match by name), go
to the streams (200 chunks, a short one, a slow one) and to the Anthropic upstream (passthrough).

`Target.start()` returns once a first request has been answered, and records how long that took (startup).
`Target.stop()` ends the process group it started (SIGTERM, then SIGKILL after a grace period) and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen
from bench.upstream import nginx_config

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CCM_CACHE") or Path.home() / ".cache" / "ccm") / "bench"
CCR_PACKAGE = CACHE / "ccr" / "node_modules" / "@musistudio" / "claude-code-router"
LITELLM_VENV = CACHE.parent / "litellm-venv"  # shared with the tests: scripts/install-litellm.sh
# LiteLLM refuses to start without a master key (and wants the `sk-` prefix); a fresh one per run, used on loopback only
MASTER_KEY = "sk-bench-" + secrets.token_hex(16)
CLIENT_HEADERS = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}

DEFAULT_MODEL = "claude-opus-5-5"


@dataclass(frozen=True, slots=True)
class Route:
    """One bench route: the model name a client sends and the upstream path family that answers it."""

    model: str  # `provider,model`: the provider part names the route's provider in every router's config
    kind: str  # "openai" (translated) or "anthropic" (passthrough)
    base: str  # upstream path prefix (bench.upstream)

    @property
    def provider(self) -> str:
        return self.model.split(",")[0]

    @property
    def upstream_model(self) -> str:
        return self.model.split(",")[1]

    @property
    def endpoint(self) -> str:
        """The full upstream path a request on this route ends at."""
        return self.base + ("/v1/chat/completions" if self.kind == "openai" else "/v1/messages")


DEFAULT = Route("openai,gpt-bench", "openai", "/openai")  # taken by every Claude model name
OPENAI_STREAM = Route("openai-stream,gpt-bench", "openai", "/openai-stream")
OPENAI_STREAM_SHORT = Route("openai-stream-short,gpt-bench", "openai", "/openai-stream-short")
OPENAI_SLOW = Route("openai-slow,gpt-bench", "openai", "/openai-slow")
ANTHROPIC = Route("anthropic,claude-bench", "anthropic", "/anthropic")
ANTHROPIC_STREAM = Route("anthropic-stream,claude-bench", "anthropic", "/anthropic-stream")
ANTHROPIC_STREAM_SHORT = Route("anthropic-stream-short,claude-bench", "anthropic", "/anthropic-stream-short")
ROUTES = (DEFAULT, OPENAI_STREAM, OPENAI_STREAM_SHORT, OPENAI_SLOW, ANTHROPIC, ANTHROPIC_STREAM,
          ANTHROPIC_STREAM_SHORT)
TINY = json.dumps({"model": DEFAULT_MODEL, "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]}, separators=(",", ":")).encode()


class TargetUnavailable(Exception):
    """The target cannot run here; the message says exactly why."""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu_s(pid: int) -> float:
    """CPU time (user + system) of `pid` and its living descendants so far, in seconds (from /proc: 10 ms ticks)."""
    total = 0
    for current in _tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MB (VmRSS summed, as `ps` would show it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total_kb, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


@dataclass
class Target(ABC):
    """One process under test. Subclasses say how to configure and launch it."""

    name: str
    label: str
    workdir: Path
    upstream_url: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def messages_url(self) -> str:
        return f"{self.base_url}/v1/messages"

    @abstractmethod
    def version(self) -> str: ...

    def check(self) -> None:  # noqa: B027 - an optional hook: a target with nothing to install keeps it empty
        """Raise TargetUnavailable when the target is not installed."""

    @abstractmethod
    def launch(self) -> tuple[list[str], dict[str, str]]:
        """Write the configuration; return the command and its environment."""

    def ready_probe(self) -> tuple[str, bytes]:
        return self.messages_url(), TINY

    async def start(self, timeout: float = 90.0) -> None:
        self.check()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        command, environ = self.launch()
        with open(self.workdir / f"{self.name}.log", "ab") as log:  # appended: every start of the run is kept
            started = time.perf_counter()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=environ, cwd=self.workdir, start_new_session=True)
        url, body = self.ready_probe()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise TargetUnavailable(f"{self.label} exited with status {self.process.returncode} at start; "
                                        f"last log lines: {self.log_tail()}")
            try:
                answer = await loadgen.fetch(url, body, CLIENT_HEADERS, timeout=5.0)
                if answer.status == 200:
                    self.startup_s = time.perf_counter() - started
                    return
            except (TimeoutError, OSError, asyncio.IncompleteReadError, loadgen.ProtocolError):
                pass
            await asyncio.sleep(0.01)
        self.stop()
        raise TargetUnavailable(f"{self.label} did not answer within {timeout:.0f} s; "
                                f"last log lines: {self.log_tail()}")

    def rss_mb(self) -> float:
        return tree_rss_mb(self.process.pid) if self.process else 0.0

    def cpu_s(self) -> float | None:
        """The process tree's CPU seconds so far (None when the harness did not start it)."""
        return tree_cpu_s(self.process.pid) if self.process else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = (self.workdir / f"{self.name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class Upstream(Target):
    """nginx serving the canned answers (bench.upstream)."""

    def check(self) -> None:
        if not shutil.which("nginx"):
            raise TargetUnavailable("nginx is not installed (make bench installs it: apt-get install -y nginx)")

    def version(self) -> str:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        return (out.stderr or out.stdout).strip().split("/")[-1]

    def launch(self) -> tuple[list[str], dict[str, str]]:
        config = nginx_config(self.workdir, self.port)
        return ["nginx", "-c", str(config), "-p", str(self.workdir)], dict(os.environ)

    def ready_probe(self) -> tuple[str, bytes]:
        return f"{self.base_url}/openai/v1/chat/completions", TINY

    @property
    def url(self) -> str:
        return self.base_url


class Ccm(Target):
    """`ccm run` on a route file with the bench routes (`ccm_routes`)."""

    python: Path = REPO / ".venv" / "bin" / "python"

    def check(self) -> None:
        if not self.python.exists():
            raise TargetUnavailable(f"{self.python} is missing (run `make install`)")

    def version(self) -> str:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "ccm"], capture_output=True,
                               text=True).stdout.strip()
        return f"{commit}{' + uncommitted changes' if dirty else ''}"

    def launch(self) -> tuple[list[str], dict[str, str]]:
        # in a folder of its own: ccm watches the route file's folder for saves, and the log written next to it
        # would wake the watcher on every request
        routes = self.workdir / "routes" / "routes.ccm"
        routes.parent.mkdir(exist_ok=True)
        routes.write_text(self.routes_text())
        return self.command(routes), self.environment()

    def routes_text(self) -> str:
        return ccm_routes(self.upstream_url)

    def command(self, routes: Path) -> list[str]:
        """`ccm run FILE --port P [args]`: all a bench target uses, which every revision of ccm has."""
        return [str(self.python.parent / "ccm"), "run", str(routes), "--port", str(self.port), *self.extra_args]

    def environment(self) -> dict[str, str]:
        # a data folder of its own: what ccm keeps under XDG_DATA_HOME (the ledger's default database) is the
        # run's, neither the user's nor another target's
        return {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_DATA_HOME": str(self.workdir / "data")}


def ccm_routes(upstream: str) -> str:
    """The bench route file: one provider per route, one `model ==` rule per bench name, the rest to DEFAULT."""
    def alias(route: Route) -> str:
        return route.provider.replace("-", "_")

    lines = ["# Written by bench/targets.py: the bench routes, selected by the request's model."]
    for route in ROUTES:
        url = upstream + route.base + ("/v1" if route.kind == "openai" else "")
        lines += [f"provider {route.provider} {{", f"  type {route.kind}", f'  url  "{url}"',
                  '  key  env("BENCH_UPSTREAM_KEY", "bench-key")', "}",
                  f"model {alias(route)} = {route.provider}/{route.upstream_model}"]
    lines += ["route {", *(f'  model == "{route.model}" -> {alias(route)}' for route in ROUTES if route != DEFAULT),
              f"  default -> {alias(DEFAULT)}", "}"]
    return "\n".join(lines) + "\n"


def claude_code_router_config(upstream: str, port: int) -> dict[str, object]:
    """claude-code-router's config.json for the bench routes (the importer's tests read it too)."""
    def provider(route: Route) -> dict[str, object]:
        entry: dict[str, object] = {"name": route.provider, "api_base_url": upstream + route.endpoint,
                                    "api_key": "bench-key", "models": [route.upstream_model]}
        if route.kind == "anthropic":
            entry["transformer"] = {"use": ["Anthropic"]}
        return entry

    return {"HOST": "127.0.0.1", "PORT": port, "Providers": [provider(route) for route in ROUTES],
            "Router": {"default": DEFAULT.model}}


def litellm_config(upstream: str, master_key: str) -> str:
    """LiteLLM's config.yaml for the bench routes: each bench model name a model group of its own."""
    def group(name: str, route: Route) -> str:
        model = f"{route.kind}/{route.upstream_model}"
        base = route.base + ("/v1" if route.kind == "openai" else "")
        return (f'  - model_name: "{name}"\n    litellm_params:\n      model: {model}\n'
                f"      api_base: {upstream}{base}\n      api_key: bench-key\n")

    claude_names = ("claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5")  # the fixtures' models
    return ("model_list:\n"
            + "".join(group(name, DEFAULT) for name in claude_names)
            + "".join(group(route.model, route) for route in ROUTES if route != DEFAULT)
            # drop_params: LiteLLM 1.100 refuses Claude Code's effort (`reasoning_effort`) for a model it does not
            # know to take it, where a Claude Code user sets this to get an answer at all
            + "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
            + f"general_settings:\n  master_key: {master_key}\n")


class ClaudeCodeRouter(Target):
    """claude-code-router 2.0.0 (`ccr start`: the server runs in the foreground of that process), its config in its
    own HOME."""

    def check(self) -> None:
        if not shutil.which("node"):
            raise TargetUnavailable("node is not installed")
        if not (CCR_PACKAGE / "dist" / "cli.js").exists():
            raise TargetUnavailable(f"claude-code-router is not installed in {CCR_PACKAGE} (make bench installs it)")

    def version(self) -> str:
        return str(json.loads((CCR_PACKAGE / "package.json").read_text())["version"])

    def launch(self) -> tuple[list[str], dict[str, str]]:
        home = self.workdir / "home"
        config_dir = home / ".claude-code-router"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / ".claude-code-router.pid").unlink(missing_ok=True)  # a stale pid file makes `start` refuse

        config = claude_code_router_config(self.upstream_url, self.port)
        (config_dir / "config.json").write_text(json.dumps(config, indent=2))
        return ["node", str(CCR_PACKAGE / "dist" / "cli.js"), "start"], {**os.environ, "HOME": str(home)}


class LiteLLM(Target):
    """The LiteLLM proxy (1 worker) from its own venv; each bench model name is a model group of its own."""

    def check(self) -> None:
        if not (LITELLM_VENV / "bin" / "litellm").exists():
            raise TargetUnavailable(f"LiteLLM is not installed in {LITELLM_VENV} (scripts/install-litellm.sh)")

    def version(self) -> str:
        out = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def launch(self) -> tuple[list[str], dict[str, str]]:
        config = self.workdir / "litellm.yaml"
        config.write_text(litellm_config(self.upstream_url, MASTER_KEY))
        environ = {
            **os.environ,
            # the cost map is otherwise fetched from the network at start
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # LiteLLM sends /v1/messages for `openai/` models to the Responses API unless told to use chat/completions
            "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "true",
        }
        command = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                   "--port", str(self.port), "--num_workers", "1"]
        return command, environ
