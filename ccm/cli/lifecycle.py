"""`ccm status`, `ccm stop`, `ccm restart`: the routers running on this machine (`ccm.cli.routers` lists them).

    ccm status [--format text|json]   each router: pid, port, file, table version, uptime, reload state
    ccm stop [PORT…]                  SIGTERM to the routers on those ports (none named: every listed one)
    ccm restart [PORT…]               stop, then start each again as it was started (same command, same folder)

A router is signalled only while its port answers as ccm serving the file it was listed with (/health's `routes`):
a listed pid that now belongs to another process is never signalled, and its listing is dropped.
"""

from __future__ import annotations

import os
from typing import Any

import click
import orjson

from ccm.cli import routers
from ccm.service import ADMIN_KEY_VARIABLE, routes_id

STOP_WAIT_SECONDS = 10.0
START_WAIT_SECONDS = 10.0


def describe(state: routers.RouterState) -> dict[str, Any]:
    """What `ccm status` says of one router: its listing, and what its /health says now."""
    health = _health(state.port)
    reload = health.get("reload") if isinstance(health, dict) else None
    last_error = reload.get("last_error") if isinstance(reload, dict) else None
    return {
        "pid": state.pid,
        "port": state.port,
        "file": state.file,
        "version": health.get("version") if health else None,
        "status": health.get("status") if health else "not answering",
        "uptime": routers.uptime(state),
        "reloads": reload.get("reloads") if isinstance(reload, dict) else None,
        "last_reload_error": last_error.get("message") if isinstance(last_error, dict) else None,
        "log": state.log,
    }


@click.command()
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status(output: str) -> None:
    """The ccm routers running on this machine: pid, port, file, table version, uptime, reload state."""
    found = [describe(state) for state in routers.running(os.environ)]
    if output == "json":
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no ccm router is running")
        return
    for router in found:
        reload = (f"last reload failed: {router['last_reload_error']}" if router["last_reload_error"]
                  else f"{router['reloads'] or 0} reloads" if router["reloads"] is not None else "reload state unknown")
        click.echo(f"port {router['port']}  pid {router['pid']}  {router['file']}  table {router['version'] or '?'}  "
                   f"up {router['uptime']}  {router['status']}  {reload}")
        if router["log"]:
            click.echo(f"    log: {router['log']}")


@click.command()
@click.argument("ports", nargs=-1, type=click.IntRange(1, 65535))
def stop(ports: tuple[int, ...]) -> None:
    """Stop the ccm routers on PORTS (none named: every one running)."""
    for state in _chosen(ports):
        if routers.stop(state, STOP_WAIT_SECONDS):
            click.echo(f"stopped the router on port {state.port} (pid {state.pid}, {state.file})")
        else:
            raise click.ClickException(f"the router on port {state.port} (pid {state.pid}) did not stop within "
                                       f"{STOP_WAIT_SECONDS:g}s")


@click.command()
@click.argument("ports", nargs=-1, type=click.IntRange(1, 65535))
def restart(ports: tuple[int, ...]) -> None:
    """Restart the ccm routers on PORTS (none named: every one running), each as it was started."""
    for state in _chosen(ports):
        if not state.command:
            raise click.ClickException(f"the router on port {state.port} did not say how it was started; stop it "
                                       "and start it again")
        if not routers.stop(state, STOP_WAIT_SECONDS):
            raise click.ClickException(f"the router on port {state.port} (pid {state.pid}) did not stop")
        log = routers.start_detached(state.command, state.cwd or os.getcwd(), state.port, routes_id(state.file),
                                     os.environ, START_WAIT_SECONDS)
        click.echo(f"restarted the router on port {state.port} ({state.file}; log: {log})")


def _chosen(ports: tuple[int, ...]) -> list[routers.RouterState]:
    """The listed routers on `ports` (all when none is named) that are what they were listed as."""
    listed = {state.port: state for state in routers.running(os.environ)}
    unknown = [port for port in ports if port not in listed]
    if unknown:
        raise click.ClickException(f"no ccm router is listed on port {', '.join(map(str, unknown))} "
                                   "(`ccm status` lists them)")
    chosen = [listed[port] for port in ports] if ports else list(listed.values())
    if not chosen:
        raise click.ClickException("no ccm router is running")
    verified = []
    for state in chosen:
        if routers.serves(state.port, routes_id(state.file)):
            verified.append(state)
        else:  # the pid may now be another process's: never signal it
            routers.forget(state.port, state.pid, os.environ)
            click.echo(f"port {state.port}: not a ccm serving {state.file} any more; its listing is dropped", err=True)
    return verified


def _health(port: int) -> dict[str, Any] | None:
    """The router's /health, with the admin key when one is set here (its detail is the admin's)."""
    import httpx

    admin_key = os.environ.get(ADMIN_KEY_VARIABLE)
    headers = {"x-ccm-key": admin_key} if admin_key else {}
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", headers=headers, timeout=1.0)
        answer = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None
