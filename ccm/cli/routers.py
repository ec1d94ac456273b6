"""The routers running on this machine: what `ccm run` leaves behind while it serves, for `ccm code`, `ccm env`,
`ccm status`, `ccm stop` and `ccm restart`.

    ${XDG_CACHE_HOME:-~/.cache}/ccm/routers/PORT.json    {pid, port, host, file, started, log, command, cwd}

`ccm run` writes its file once listening is about to start and removes it when it stops; a file whose process is
gone (killed, crashed) is removed by the next `running()`. Which file a router serves is asked of the router itself:
/health's `routes` (`ccm.service.routes_id`), so a server that merely answers 200 on the port is never taken for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

import click

from ccm import processes
from ccm.frozen import frozen

LOG_FILE_VARIABLE = "CCM_LOG_FILE"  # set for a router started in the background: where its output goes
RUN_COMMAND = (sys.executable, "-c", "from ccm.cli.main import main; main()")  # then `run FILE …`


@frozen
class RouterState:
    pid: int
    port: int
    host: str
    file: str  # the route file, resolved
    started: float  # epoch seconds
    log: str | None = None
    command: list[str] = field(default_factory=list)  # how it was started: `ccm restart` starts it the same way
    cwd: str = ""  # where it was started


def state_dir(environ: Mapping[str, str]) -> Path:
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ccm" / "routers"


def record(state: RouterState, environ: Mapping[str, str]) -> Path:
    folder = state_dir(environ)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{state.port}.json"
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(asdict(state)))
    temporary.replace(path)
    return path


def forget(port: int, pid: int, environ: Mapping[str, str]) -> None:
    """Remove the state file of the router on `port`, if it is still `pid`'s (a newer router may have taken over)."""
    path = state_dir(environ) / f"{port}.json"
    state = _read(path)
    if state is not None and state.pid == pid:
        path.unlink(missing_ok=True)


def running(environ: Mapping[str, str]) -> list[RouterState]:
    """The routers whose process is alive, by port; the files of the others are removed."""
    found = []
    for path in sorted(state_dir(environ).glob("*.json")):
        state = _read(path)
        if state is None or not processes.running(state.pid):
            path.unlink(missing_ok=True)
            continue
        found.append(state)
    return sorted(found, key=lambda state: state.port)


def health(port: int, timeout: float = 0.5) -> dict[str, Any] | None:
    """The /health answer of whatever listens on 127.0.0.1:`port`, or None (nothing there, not 200, not JSON)."""
    import httpx

    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=timeout)
        answer = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def serves(port: int, routes: str) -> bool:
    """Whether the server on `port` is ccm serving the route file whose `routes_id` is `routes`."""
    answer = health(port)
    return answer is not None and answer.get("service") == "ccm" and answer.get("routes") == routes


def in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uptime(state: RouterState) -> str:
    seconds = max(int(time.time() - state.started), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def start_detached(command: list[str], cwd: str, port: int, routes: str, environ: Mapping[str, str],
                   wait: float) -> Path:
    """Start a `ccm run` command detached from this process (its own session: it outlives the caller), its output
    appended to ccm-PORT.log beside the state folder; returns the log's path once the router on `port` says it
    serves the file `routes` names, or raises a ClickException pointing at the log."""
    log_path = state_dir(environ).parent / f"ccm-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, environ.get("PYTHONPATH")]))
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, env={**environ, "PYTHONPATH": python_path, LOG_FILE_VARIABLE: str(log_path)},
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if serves(port, routes):
            return log_path
        if process.poll() is not None:
            raise click.ClickException(f"ccm run exited with status {process.returncode}; see {log_path}")
        time.sleep(0.1)
    raise click.ClickException(f"ccm run did not answer /health within {wait:g}s; see {log_path}")


def stop(state: RouterState, wait: float = 10.0) -> bool:
    """SIGTERM to the router, then wait for it to go (True) or for `wait` seconds to pass (False)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not processes.running(state.pid):
            return True
        time.sleep(0.05)
    return False


def _read(path: Path) -> RouterState | None:
    try:
        data = json.loads(path.read_text())
        return RouterState(**data)
    except (OSError, ValueError, TypeError):
        return None
