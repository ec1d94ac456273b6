"""`CcmServer`: the real `ccm run FILE --port P` as a subprocess, the way a user starts it.

The route file is written into a temporary folder from a template; the fakes' URLs and keys reach it through
environment variables (`url env("OPENAI_BASE_URL")`), exactly as users keep URLs and keys out of their files.
`start()` waits for `GET /health` to answer 200 and fails with the server's log when the process exits or does
not become healthy; `stop()` sends SIGTERM, then kills after a grace period. The log (stdout and stderr) is kept in
a file beside the route file and is available as `logs()` for assertions and failure messages.

    with CcmServer.from_text(tmp_path, ROUTES, {"OPENAI_BASE_URL": f"{url}/v1", ...}) as ccm:
        anthropic.Anthropic(base_url=ccm.url, api_key="ccm-local")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parents[2]
# The package's own entry point, whether or not the venv's `ccm` script has been installed.
CCM_COMMAND = (sys.executable, "-c", "from ccm.cli.main import main; main(prog_name='ccm')")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CcmServer:
    def __init__(
        self,
        route_file: Path,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 20.0,
    ) -> None:
        self.route_file = route_file
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = route_file.with_name(f"{route_file.stem}-ccm-{self.port}.log")
        self.startup_timeout = startup_timeout
        self.args = tuple(args)
        # Only what ccm needs: the test runner's provider keys (if any) must not leak into the server under test.
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(route_file.parent)),
            # the usage ledger's default SQLite file, in the test's folder (never the user's own)
            "XDG_DATA_HOME": str(route_file.parent / "data"),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_text(cls, folder: Path, routes: str, env: Mapping[str, str], name: str = "routes.ccm",
                  **options: object) -> CcmServer:
        route_file = folder / name
        route_file.write_text(routes)
        return cls(route_file, env, **options)  # type: ignore[arg-type]

    @property
    def command(self) -> list[str]:
        return [*CCM_COMMAND, "run", str(self.route_file), "--port", str(self.port), *self.args]

    def start(self) -> CcmServer:
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self.command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"`ccm run` exited with {self._process.returncode} before serving:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"`ccm run` did not answer /health within {self.startup_timeout} s:\n{self.logs()}")

    def stop(self, grace: float = 5.0) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> CcmServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
