"""`ccm run`, `ccm code`, `ccm env`: serve a route file, and point Claude Code at it.

    ccm run  [FILE] [--host 127.0.0.1] [--port 2260] [--workers N] [--server uvicorn|hypercorn]
             [--log-level info] [--log-format text|json] [--no-metrics] [--capture DIR [--capture-max-files N]
             [--capture-max-mb N]]
    ccm code [--port N] [--statusline|--statusline-project] [FILE.ccm] [--] [CLAUDE_ARGS…]
                                                          start the router if needed, then run `claude` through it
    ccm env  [FILE] [--port N]                            the `export` lines that point a shell's Claude Code at ccm

Without FILE, each finds the route file as `ccm.cli.route_file` says: $CCM_ROUTES, else ./routes.ccm, else
${XDG_CONFIG_HOME:-~/.config}/ccm/routes.ccm (which `ccm init` writes).

`ccm run` refuses to start on a file with errors or failing in-file tests (exit 1, diagnostics on stderr), and
refuses a non-loopback `--host` when the file declares no inbound `auth` key (exit 2). A provider whose key is
unset gets one warning and the server starts anyway: requests routed to it get an error naming the variable.

`ccm code` takes its route file as the first argument only when it ends in `.ccm`, so `ccm code -p "hi"` passes
everything to claude (a `--` after the file is dropped). It uses a running router only when that router's /health
says it is ccm serving the same file (`routes`); otherwise it starts one, on the default port when that is free,
else on a free port (with `--port`, a port taken by anything else is an error). What Claude Code is given
(`ccm.cli.claude_env`): the router's URL, ccm's own inbound key in `x-ccm-key` through ANTHROPIC_CUSTOM_HEADERS,
and the `ccm-local` placeholder key only when the user has no credentials of their own; their own API key or
Claude login is never replaced. It never prints keys: `ccm env`
writes environment references (`"${CCM_KEY}"`) for keys that come from the environment.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from ccm.capture import MAX_BYTES, MAX_FILES, CaptureError
from ccm.cli import routers
from ccm.cli.claude_env import claude_environment, replaced_headers, shell_exports
from ccm.cli.route_file import find_route_file
from ccm.compile.check import check
from ccm.core.runtime import Runtime, build_runtime
from ccm.diagnostics import UNSET_VARIABLE, Diagnostic
from ccm.ledger.store.base import default_url
from ccm.logs import FORMATS, configure_logging, request_logger
from ccm.service import (
    CAPTURE_BYTES_VARIABLE,
    CAPTURE_FILES_VARIABLE,
    CAPTURE_VARIABLE,
    DB_VARIABLE,
    METRICS_VARIABLE,
    MULTIPROC_VARIABLE,
    PUBLIC_VARIABLE,
    ROUTES_FILE_VARIABLE,
    NotServable,
    ServiceOptions,
    build_service,
    routes_id,
)
from ccm.table import EnvRef, FileRef, RoutingTable, resolve

DEFAULT_PORT = 2260  # ccm on a phone keypad; not 3456, which is claude-code-router's (people run both)
STARTUP_WAIT_SECONDS = 10.0

log = logging.getLogger("ccm")

# FILE may be left out: `ccm.cli.route_file` finds it ($CCM_ROUTES, ./routes.ccm, ~/.config/ccm/routes.ccm)
file_argument = click.argument("file", required=False, type=click.Path(dir_okay=False))
port_option = click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))


def load_table(path: str | Path, log_format: str = "text", serving: bool = False) -> RoutingTable:
    """Check the route file (compile, run its tests); print any problem and exit 1. Warnings are printed too, but
    when `serving`, not the unset variables: `report_unconfigured` names them once, with their providers."""
    file = Path(path)
    if not file.is_file():
        raise click.ClickException(f"route file not found: {file}")
    checked = check(file, os.environ)
    _report(checked.reported, log_format, serving)
    if checked.table is None:
        raise SystemExit(1)
    return checked.table


def report_unconfigured(runtime: Runtime) -> None:
    """One warning per provider that cannot be used until a variable is set; the server starts anyway."""
    for provider in runtime.unconfigured:
        log.warning(
            "provider %s is not configured: %s (requests routed to it will fail)",
            provider.provider.name,
            provider.endpoint.missing,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@file_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@port_option
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Server processes.")
@click.option(
    "--server",
    "server_name",
    default="uvicorn",
    show_default=True,
    type=click.Choice(["uvicorn", "hypercorn"]),
    help="The ASGI server (docs/performance-notes.md compares them).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option("--db", "db", default=None, metavar="URL",
              help="The usage ledger's database: sqlite:///PATH or postgresql://… [default: $CCM_DB, else "
                   "~/.local/share/ccm/ccm.db].")
@click.option("--no-ledger", is_flag=True, help="Meter nothing: no keys, credits or usage rows.")
@click.option("--log-format", default="text", show_default=True, type=click.Choice(FORMATS),
              help="json: one JSON object per line, the request line's facts as keys.")
@click.option("--metrics/--no-metrics", default=True, show_default=True,
              help="Serve Prometheus metrics at /metrics (docs/metrics.md).")
@click.option("--capture", metavar="DIR", type=click.Path(file_okay=False),
              help="Write each request (body and headers, credentials removed) into DIR as a JSON file.")
@click.option("--capture-max-files", default=MAX_FILES, show_default=True, type=click.IntRange(1),
              help="Capture keeps at most this many files (the oldest go).")
@click.option("--capture-max-mb", default=MAX_BYTES // (1024 * 1024), show_default=True, type=click.IntRange(1),
              help="Capture keeps at most this many megabytes (the oldest files go).")
def run(file: str | None, host: str, port: int, workers: int, server_name: str, log_level: str, db: str | None,
        no_ledger: bool, log_format: str, metrics: bool, capture: str | None, capture_max_files: int,
        capture_max_mb: int) -> None:
    """Serve FILE: Claude Code's requests routed as the route file says.

    Without FILE: $CCM_ROUTES, else ./routes.ccm, else ~/.config/ccm/routes.ccm (`ccm init` writes one)."""
    file = str(find_route_file(file, os.environ))
    configure_logging(log_level, log_format)
    public = not is_loopback(host)
    ledger_url = None if no_ledger else (db or default_url(os.environ))
    from ccm.core import server

    # prometheus_client picks its storage when first imported, from this variable: a folder inherited from the
    # shell is never used (its old files would be counted); the workers get one of ccm's own, below
    os.environ.pop(MULTIPROC_VARIABLE, None)
    capture_bytes = capture_max_mb * 1024 * 1024
    if workers > 1:
        table = load_table(file, log_format, serving=True)
        _refuse_unsafe(table, host)
        os.environ[ROUTES_FILE_VARIABLE] = os.path.abspath(file)
        os.environ[PUBLIC_VARIABLE] = "1" if public else "0"
        os.environ[DB_VARIABLE] = ledger_url or ""
        os.environ[METRICS_VARIABLE] = "1" if metrics else "0"
        if capture is not None:  # the bounds are shared out between the workers
            os.environ[CAPTURE_VARIABLE] = os.path.abspath(capture)
            os.environ[CAPTURE_FILES_VARIABLE] = str(max(capture_max_files // workers, 1))
            os.environ[CAPTURE_BYTES_VARIABLE] = str(max(capture_bytes // workers, 1))
        runtime, _ = build_runtime(table, os.environ)
        report_unconfigured(runtime)  # once, here: the workers build their apps quietly
        with tempfile.TemporaryDirectory(prefix="ccm-metrics-") as metrics_dir:
            # every worker's metrics in memory-mapped files here; the folder goes when `ccm run` stops
            if metrics:
                os.environ[MULTIPROC_VARIABLE] = metrics_dir
            with _listed(file, host, port):
                code = server.serve_workers("ccm.service:worker_app", host, port, workers, server_name)
        raise SystemExit(code)
    options = ServiceOptions(public=public, subscribers=(request_logger(log_format),), metrics=metrics,
                             capture_dir=capture, capture_max_files=capture_max_files,
                             capture_max_bytes=capture_bytes, db=ledger_url)
    try:
        service = build_service(file, os.environ, options)
    except NotServable as refused:
        _report(refused.checked.reported, log_format)
        raise SystemExit(1) from None
    except CaptureError as refused:
        raise click.BadParameter(str(refused), param_hint="--capture") from None
    _report(service.checked.reported, log_format, serving=True)
    table = service.runtime.table
    _refuse_unsafe(table, host)
    report_unconfigured(service.runtime)
    from ccm.web import mount_pages

    mount_pages(service, os.environ)
    log.info("serving %s (table %s, %d rules); the admin page is at /admin", file, table.version, len(table.rules))
    with _listed(file, host, port):
        server.serve(service.app, host, port, server_name)


@contextlib.contextmanager
def _listed(file: str, host: str, port: int) -> Iterator[None]:
    """This router in the list `ccm status` reads (`ccm.cli.routers`) while it serves (a port chosen by the system,
    `--port 0`, is not listed: nobody could find it by its port)."""
    if port == 0:
        yield
        return
    pid = os.getpid()
    state = routers.RouterState(pid, port, host, str(Path(file).resolve()), time.time(),
                                os.environ.get(routers.LOG_FILE_VARIABLE) or None, _command_line(), os.getcwd())
    try:
        routers.record(state, os.environ)
    except OSError as error:  # the cache folder is not writable: serve anyway, unlisted
        log.warning("this router is not listed for ccm status: %s", error)
    try:
        yield
    finally:
        routers.forget(port, pid, os.environ)


def _command_line() -> list[str]:
    """How this `ccm run` was started, so that `ccm restart` can start it again the same way."""
    return [*routers.RUN_COMMAND, *sys.argv[1:]]


def _report(diagnostics: Iterable[Diagnostic], log_format: str, serving: bool = False) -> None:
    """The route file's problems and warnings as the compiler renders them; one log line each with `--log-format
    json`, so every line of the output is JSON. `serving`: without the unset variables (see `load_table`)."""
    for diagnostic in diagnostics:
        if serving and diagnostic.code == UNSET_VARIABLE:
            continue
        if log_format == "json":
            log.log(logging.ERROR if diagnostic.severity == "error" else logging.WARNING, diagnostic.render())
        else:
            click.echo(diagnostic.render(), err=True)


def _refuse_unsafe(table: RoutingTable, host: str) -> None:
    """Exit before serving a table that would let the network in, or that nobody could use."""
    if not table.settings.auth and not is_loopback(host):
        click.echo(
            f"error: refusing to listen on {host}: the route file declares no inbound `auth` key, so anyone who can "
            "reach the port could spend your upstream keys. Declare one (auth env(CCM_API_KEY)) or listen on "
            "127.0.0.1.",
            err=True,
        )
        raise SystemExit(2)
    unresolved = _unresolved_auth(table)
    if table.settings.auth and len(unresolved) == len(table.settings.auth):
        click.echo(
            f"error: inbound auth is declared but no key is set (set {', '.join(unresolved)}); "
            "refusing to start a server nobody can use.",
            err=True,
        )
        raise SystemExit(1)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--port", default=None, type=click.IntRange(1, 65535),
              help=f"The router's port [default: a router already serving FILE, else {DEFAULT_PORT}, else a free "
                   "one].")
@click.option("--statusline", is_flag=True, help="First install `ccm statusline` as Claude Code's statusLine in "
              "~/.claude/settings.json (a different one is backed up beside it).")
@click.option("--statusline-project", is_flag=True, help="The same, in this project's .claude/settings.json.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def code(port: int | None, statusline: bool, statusline_project: bool, args: tuple[str, ...]) -> None:
    """Run Claude Code through ccm: the router serving FILE if one runs, else one started in the background.

    ccm code [OPTIONS] [FILE.ccm] [--] [CLAUDE_ARGS]...: the first argument is the route file when it ends in .ccm
    (else $CCM_ROUTES, ./routes.ccm, ~/.config/ccm/routes.ccm); the rest, after an optional `--`, go to claude."""
    if statusline or statusline_project:
        _install_statusline(project=statusline_project)
    named, claude_args = split_code_args(args)
    claude = os.environ.get("CCM_CLAUDE") or shutil.which("claude")
    if not claude:
        raise click.ClickException("`claude` was not found on PATH; install Claude Code or set CCM_CLAUDE")
    file = str(find_route_file(named, os.environ))
    running = router_for(file, port)
    # a router already serving the file has said what it had to say at its start: only its errors matter here
    table = load_table(file) if running is None else _quiet_table(file)
    if running is None:
        running = port or (DEFAULT_PORT if not routers.in_use(DEFAULT_PORT) else routers.free_port())
        if port is None and running != DEFAULT_PORT:
            click.echo(f"ccm: port {DEFAULT_PORT} is taken by {_describe(DEFAULT_PORT)}; starting a router for "
                       f"{file} on port {running}", err=True)
        _start_background(file, running)
    env = claude_environment(table, f"http://127.0.0.1:{running}", os.environ, Path.home(), claude_args)
    raise SystemExit(subprocess.call([claude, *claude_args], env=env))


def split_code_args(args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """`ccm code`'s words: the route file (when the first ends in .ccm) and claude's arguments, without the `--`
    that may separate them (click keeps a `--` that follows an argument)."""
    file = args[0] if args and args[0].endswith(".ccm") else None
    rest = list(args[1:] if args and args[0].endswith(".ccm") else args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return file, rest


def router_for(file: str, port: int | None) -> int | None:
    """The port of a running ccm that serves `file`: on `port` when one is given (anything else there is an error),
    else any listed router serving it, else the default port's; None when `ccm code` should start one."""
    routes = routes_id(file)
    if port is not None:
        if routers.serves(port, routes):
            return port
        if routers.in_use(port):
            raise click.ClickException(f"port {port} is taken by {_describe(port)}, not a ccm serving {file}; "
                                       "choose another --port, or leave it out to use a free one")
        return None
    resolved = str(Path(file).resolve())
    for state in routers.running(os.environ):
        if state.file == resolved and routers.serves(state.port, routes):
            return state.port
    return DEFAULT_PORT if routers.serves(DEFAULT_PORT, routes) else None


def _describe(port: int) -> str:
    answer = routers.health(port)
    if answer is not None and answer.get("service") == "ccm":
        return "another ccm router (serving a different route file)"
    return "another server"


def _quiet_table(file: str) -> RoutingTable:
    """The route file's table for its inbound key, reporting errors only (its warnings are the running router's)."""
    checked = check(Path(file), os.environ)
    if checked.table is None:
        _report([d for d in checked.reported if d.severity == "error"], "text")
        raise SystemExit(1)
    return checked.table


@click.command()
@file_argument
@click.option("--port", default=None, type=click.IntRange(1, 65535),
              help=f"The router's port [default: a router already serving FILE, else {DEFAULT_PORT}].")
def env(file: str | None, port: int | None) -> None:
    """Print the shell exports that point Claude Code at ccm: eval "$(ccm env)"."""
    found = find_route_file(file, os.environ, required=False)
    table = load_table(found) if found is not None else None
    if port is None:
        port = (router_for(str(found), None) if found is not None else None) or DEFAULT_PORT
    for line in shell_exports(table, f"http://127.0.0.1:{port}", os.environ, Path.home()):
        click.echo(line)
    replaced = replaced_headers(os.environ) if table is not None and table.settings.auth else []
    if replaced:
        click.echo(f"ccm env: ANTHROPIC_CUSTOM_HEADERS is replaced (it also held {', '.join(replaced)}); "
                   "`ccm code` keeps them", err=True)


def _install_statusline(project: bool) -> None:
    from ccm.claude_settings import SettingsError, install_statusline, project_settings, user_settings

    try:
        installed = install_statusline(project_settings() if project else user_settings())
    except (SettingsError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if installed.change != "unchanged":
        saved = f" (the previous one is saved in {installed.backup})" if installed.backup else ""
        click.echo(f"ccm: statusLine {installed.change} in {installed.path}{saved}", err=True)


def _unresolved_auth(table: RoutingTable) -> list[str]:
    return [v.name if isinstance(v, EnvRef) else str(v.model_dump()) for v in table.settings.auth
            if isinstance(v, EnvRef | FileRef) and resolve(v, os.environ) is None]


def _start_background(file: str, port: int) -> None:
    """Start `ccm run FILE --port PORT` detached (it outlives this command), logging to ~/.cache/ccm/ccm-PORT.log;
    it lists itself for `ccm status`, `ccm stop` and `ccm restart` (`ccm.cli.routers`)."""
    command = [*routers.RUN_COMMAND, "run", file, "--port", str(port)]
    log_path = routers.start_detached(command, os.getcwd(), port, routes_id(file), os.environ, STARTUP_WAIT_SECONDS)
    click.echo(f"ccm: router started on port {port} (log: {log_path}; `ccm stop {port}` stops it)", err=True)
