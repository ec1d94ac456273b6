"""`ccm status`, `ccm stop`, `ccm restart` on real routers: the one `ccm code` starts in the background is listed,
restarted as it was started, and stopped; a listed pid that is no longer that router is never signalled."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from ccm.cli.routers import RouterState, record
from ccm.processes import running as alive

from .test_cli import CCM, ROUTES, environment, fake_claude, free_port, stop_listed_routers


def ccm(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CCM, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_status_restart_and_stop_the_router_ccm_code_started(tmp_path: Path) -> None:
    routes = tmp_path / "routes.ccm"
    routes.write_text(ROUTES)
    env = environment(tmp_path, CCM_CLAUDE=str(fake_claude(tmp_path)))
    port = free_port()
    try:
        assert ccm(tmp_path, env, "status").stdout.strip() == "no ccm router is running"
        assert ccm(tmp_path, env, "code", "--port", str(port), str(routes)).returncode == 7
        listed = json.loads(ccm(tmp_path, env, "status", "--format", "json").stdout)
        assert [(r["port"], r["file"]) for r in listed] == [(port, str(routes.resolve()))]
        (router,) = listed
        version = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["version"]
        assert router["version"] == version and router["reloads"] == 0 and router["status"] == "degraded"
        assert router["log"] == str(tmp_path / "cache" / "ccm" / f"ccm-{port}.log")
        text = ccm(tmp_path, env, "status").stdout
        assert f"port {port}  pid {router['pid']}  {routes.resolve()}  table {version}  up " in text

        restarted = ccm(tmp_path, env, "restart", str(port))
        assert restarted.returncode == 0, restarted.stderr
        assert f"restarted the router on port {port}" in restarted.stdout
        (again,) = json.loads(ccm(tmp_path, env, "status", "--format", "json").stdout)
        assert again["port"] == port and again["pid"] != router["pid"] and not alive(router["pid"])
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200

        stopped = ccm(tmp_path, env, "stop")
        assert stopped.returncode == 0 and f"stopped the router on port {port}" in stopped.stdout
        assert not alive(again["pid"])
        assert ccm(tmp_path, env, "status").stdout.strip() == "no ccm router is running"
        unknown = ccm(tmp_path, env, "stop", str(port))
        assert unknown.returncode == 1 and "no ccm router is listed on port" in unknown.stderr
    finally:
        stop_listed_routers(tmp_path)


def test_a_listed_pid_that_is_not_the_router_is_never_signalled(tmp_path: Path) -> None:
    env = environment(tmp_path)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        port = free_port()  # nothing answers there
        record(RouterState(bystander.pid, port, "127.0.0.1", str(tmp_path / "routes.ccm"), time.time()),
               {"XDG_CACHE_HOME": env["XDG_CACHE_HOME"]})
        done = ccm(tmp_path, env, "stop", str(port))
        assert "not a ccm serving" in done.stderr and "listing is dropped" in done.stderr
        time.sleep(0.2)
        assert bystander.poll() is None  # still running
        assert ccm(tmp_path, env, "status").stdout.strip() == "no ccm router is running"
    finally:
        bystander.kill()
        bystander.wait()
