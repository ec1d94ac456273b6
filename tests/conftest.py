"""Shared test helpers. Suites keep their own fixtures in their folder's conftest.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The Claude Code requests captured for the project (../shared/fixtures when it was set up), kept in the repository
# so that a clone anywhere has them: the tests and the benchmarks read them from here.
FIXTURES = REPO / "tests" / "fixtures" / "claude-code-2.1.328"


def pytest_configure(config: pytest.Config) -> None:
    # the suite talks to loopback only: a proxy the environment names (for package downloads, say) must not carry
    # the in-process clients' calls to the fakes (ccm honours HTTP(S)_PROXY; `ccm run` children get a bare env)
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name, ""), "127.0.0.1,localhost,::1"]))
    # without them every golden test would be collected with an empty parameter set: skipped, not failed
    if not any(FIXTURES.glob("*.json")):
        raise pytest.UsageError(f"the captured Claude Code requests are missing: {FIXTURES}")


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict[str, Any]:
    """A captured request: {method, path, headers, body}."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"captured requests not found at {FIXTURES}"
    return FIXTURES


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                   "no_proxy")


@pytest.fixture
def without_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy named in the environment: `make_client` builds ccm's own transport, as on a machine without one."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["inotify", "watchfiles"])
def watcher(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way `ccm.core.watch` can watch the route file: inotify on the event loop (these machines run Linux), and
    watchfiles' thread, which every system without inotify gets."""
    import ccm.core.watch

    if request.param == "watchfiles":
        monkeypatch.setattr(ccm.core.watch, "_libc", lambda: None)
    else:
        assert ccm.core.watch._libc() is not None, "inotify must be there on Linux"
    return str(request.param)
