"""The real Claude Code CLI through a ccm key with too little credit: it shows the 402's message (the balance, who
can add credit) and stops, instead of retrying as it would a server error."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import CcmServer, FakeAnthropic, Reply, serve
from tests.ledger.test_serving import ROUTES, UPSTREAM_KEY, new_key

from .test_e2e_claude_cli import CLI_TIMEOUT

pytestmark = pytest.mark.slow  # the real Claude Code CLI or real `ccm run`s: seconds each


@pytest.fixture
def ccm(tmp_path: Path) -> Iterator[CcmServer]:
    with serve(FakeAnthropic(UPSTREAM_KEY, default=Reply(text="never"))) as (url, _):
        env = {"UPSTREAM_URL": url, "UPSTREAM_KEY": UPSTREAM_KEY}
        db = f"sqlite:///{tmp_path / 'ledger.db'}"
        with CcmServer.from_text(tmp_path, ROUTES, env, args=("--db", db)) as server:
            server.db = db  # type: ignore[attr-defined]
            yield server


def test_claude_code_shows_the_402_and_stops(ccm: CcmServer, claude_bin: Path, tmp_path: Path) -> None:
    secret = new_key(ccm.db, "short", "--credits", "0.000001")  # type: ignore[attr-defined]
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "ANTHROPIC_BASE_URL": ccm.url,
           "ANTHROPIC_API_KEY": secret, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    started = time.monotonic()
    done = subprocess.run([str(claude_bin), "-p", "hi"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)
    took = time.monotonic() - started
    shown = done.stdout + done.stderr
    assert done.returncode != 0
    assert "out of credit" in shown and "ccm credits add short" in shown, shown
    refused = ccm.logs().count("status=402")
    assert 1 <= refused <= 2 and took < 30, f"{refused} refusals in {took:.0f} s:\n{ccm.logs()}"
