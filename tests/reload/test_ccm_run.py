"""`ccm run` itself reloads: the real command in a subprocess, its file saved, broken, re-read on SIGHUP, fixed."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fakes import CcmServer, FakeAnthropic

from .conftest import BROKEN, HEADERS, REQUEST, UPSTREAM_KEY, routes

pytestmark = pytest.mark.slow  # the real Claude Code CLI or real `ccm run`s: seconds each


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_ccm_run_reloads_on_save_and_on_sighup(tmp_path: Path, upstream: tuple[str, FakeAnthropic]) -> None:
    url, _ = upstream
    environ = {"UPSTREAM_URL": url, "UPSTREAM_KEY": UPSTREAM_KEY}
    with CcmServer.from_text(tmp_path, routes(1), environ) as ccm:

        def model() -> str:
            return str(httpx.post(f"{ccm.url}/v1/messages", json=REQUEST, headers=HEADERS).json()["model"])

        def reload_status() -> dict:
            return httpx.get(f"{ccm.url}/health").json()["reload"]  # type: ignore[no-any-return]

        assert model() == "model-v1"
        ccm.route_file.write_text(routes(2))
        wait_until(lambda: model() == "model-v2", "the save to be served")

        ccm.route_file.write_text(BROKEN)
        wait_until(lambda: reload_status()["last_error"] is not None, "the broken save to be reported")
        assert "unknown model `mian`" in reload_status()["last_error"]["message"]
        assert model() == "model-v2"

        # SIGHUP re-reads the (still broken) file: the server neither dies (SIGHUP's default) nor changes table.
        assert ccm._process is not None
        ccm._process.send_signal(signal.SIGHUP)
        wait_until(lambda: "on SIGHUP rejected; still serving" in ccm.logs(), "the SIGHUP reload")
        assert ccm.running and model() == "model-v2"

        ccm.route_file.write_text(routes(3))
        wait_until(lambda: model() == "model-v3", "the fixed file to be served")
        assert reload_status()["last_error"] is None
    assert "reloaded routes.ccm" in ccm.logs() and "rejected; still serving" in ccm.logs()
