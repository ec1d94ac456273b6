"""The composition root: one function builds the whole service from a route file, the environment and options.

    build_service(path, environ, options) -> Service     or raises `NotServable` (the file's problems)
    Service.app                                          the ASGI app a server runs: lifespan, mounts, the API

`ccm run`, each of its `--workers` and the tests all call `build_service`, so what is served is assembled in one
place. The pieces:

    check          the one check (`ccm.compile.check.check`): the first table and every reload go through it
    runtime        the table resolved against the environment (`ccm.core.runtime.build_runtime`), with the client
                   factory the options name — for the first table and for every table a reload builds
    api            the hot path (`ccm.core.app.App`): a plain ASGI app, nothing in front of it but a path test
    mounts         pages off the hot path (`/`, `/admin`, `/metrics`, …) mounted beside the API (`Service.mount`):
                   `/metrics` (`ccm.metrics`, with `options.metrics`) and `/ccm/sessions/{id}` (`ccm.sessions`)
    costs          where money figures come from (`ccm.costs.Costs`): the ledger's (`ccm.metering.LedgerCosts`),
                   or without one the route file's prices
    capture        request capture (`ccm.capture.Capture`), started by `options.capture_dir` or later by the admin
                   page's switch (`ccm.web.admin`)
    lifespan       one `AsyncExitStack` of services, entered at the server's startup and closed at its shutdown:
                   the providers' pools, the reloader, the record queue's drain (and, as they arrive, the ledger's
                   writer and the like: `Service.on_lifespan`)

`core` never imports the compiler or the CLI: this module is where they meet.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ccm.capture import MAX_BYTES, MAX_FILES, Capture
from ccm.compile.check import Checked, check
from ccm.core.app import App, RequestHook, TokenCount
from ccm.core.inflight import InFlight
from ccm.core.record import RecentRecords, Records, Subscriber, log_request
from ccm.core.relay import NO_DRAINS, Drains
from ccm.core.reload import Reloader
from ccm.core.runtime import ClientFactory, ProviderRuntime, Runtime, RuntimeHolder, build_runtime, close_providers
from ccm.core.types import ASGIApp, Message, Receive, Scope, Send
from ccm.costs import Costs, PriceListCosts
from ccm.frozen import frozen
from ccm.logs import FORMAT_VARIABLE, LEVEL_VARIABLE, configure_logging, request_logger
from ccm.sessions import SessionsApp
from ccm.table import RoutingTable
from ccm.upstream.client import make_client

if TYPE_CHECKING:  # imported where the ledger is opened: `ccm run --no-ledger` starts without it
    from ccm.ledger.ledger import Ledger
    from ccm.metering import LedgerCosts, LedgerMetering

log = logging.getLogger("ccm")

ADMIN_KEY_VARIABLE = "CCM_ADMIN_KEY"

Lifespan = Callable[[], AbstractAsyncContextManager[Any]]


def routes_id(path: str | Path) -> str:
    """Which route file a router serves, as /health says it (`routes`): a digest of its resolved path, so that
    `ccm code` can tell its router from another without /health naming a path."""
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]


class NotServable(Exception):
    """The route file cannot be served: it does not compile or one of its tests fails (`checked` says which)."""

    def __init__(self, path: Path, checked: Checked) -> None:
        super().__init__(f"{path}: {len(checked.problems)} problem(s)")
        self.path = path
        self.checked = checked


@frozen
class ServiceOptions:
    watch: bool = True  # reload on save (SIGHUP always reloads)
    public: bool = False  # listening beyond loopback: a reload that drops inbound auth is refused
    client_factory: ClientFactory = make_client
    count_tokens: TokenCount | None = None  # None: ccm's local counter (tests stand in a fixed count)
    subscribers: tuple[Subscriber, ...] = (log_request,)
    drains: Drains = NO_DRAINS
    max_drain: float | None = None  # how long retired providers wait for their requests (None: the reloader's)
    db: str | None = None  # the usage ledger's database URL (`ccm run --db`, CCM_DB); None: no metering
    metrics: bool = False  # serve /metrics (`ccm run` turns it on unless --no-metrics)
    metrics_dir: str | None = None  # prometheus_client's multiprocess folder, under `ccm run --workers N`
    capture_dir: str | None = None  # capture requests into this folder from the start (`ccm run --capture DIR`)
    capture_max_files: int = MAX_FILES
    capture_max_bytes: int = MAX_BYTES


DEFAULT_OPTIONS = ServiceOptions()


@dataclass(slots=True)
class Service:
    path: Path
    checked: Checked  # what the first check said (its warnings, for the caller to show)
    holder: RuntimeHolder
    api: App
    reloader: Reloader
    records: Records
    recent: RecentRecords
    in_flight: InFlight
    costs: Costs
    capture: Capture
    metrics: Any = None  # ccm.metrics.Metrics when /metrics is served (imported only then: prometheus_client)
    metering: LedgerMetering | None = None  # while the usage ledger is open (the lifespan, with a database)
    _mounts: list[tuple[str, ASGIApp]] = field(default_factory=list)
    _lifespans: list[Lifespan] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        return self.holder.current

    @property
    def ledger(self) -> Ledger | None:
        """The usage ledger this service meters through, while it is open (the pages read keys and usage from it)."""
        return self.metering.ledger if self.metering is not None else None

    def mount(self, prefix: str, app: ASGIApp) -> None:
        """Serve `app` for `prefix` and everything under it (`/admin`, `/admin/…`; `/` for whatever the API and the
        other mounts do not answer). `prefix` never shadows the API's own paths."""
        self._mounts.append((prefix.rstrip("/") or "/", app))
        self._mounts.sort(key=lambda mount: len(mount[0]), reverse=True)  # the longest prefix wins

    def on_lifespan(self, service: Lifespan) -> None:
        """An async context manager entered at startup (in order) and closed at shutdown (in reverse)."""
        self._lifespans.append(service)

    @property
    def app(self) -> ASGIApp:
        return functools.partial(_serve, self)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The service's lifespan: what the ASGI lifespan protocol runs, and what a test can enter directly."""
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._close_providers)
            tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tasks.cancel_scope.cancel)
            await tasks.start(self.reloader.run)
            for service in self._lifespans:
                await stack.enter_async_context(service())
            yield

    async def _close_providers(self) -> None:
        await close_providers(list(self.holder.current.providers.values()))


def build_service(path: str | os.PathLike[str], environ: Mapping[str, str],
                  options: ServiceOptions = DEFAULT_OPTIONS) -> Service:
    """Check the route file and assemble the service around its table; `NotServable` when it cannot be served."""
    route_file = Path(path)
    checked = check(route_file, environ)
    if checked.table is None:
        raise NotServable(route_file, checked)
    runtime, _ = build_runtime(checked.table, environ, client_factory=options.client_factory)
    holder = RuntimeHolder(runtime)
    in_flight = InFlight()
    recent = RecentRecords()
    records = Records((*options.subscribers, recent))
    api = App(holder, records=records, in_flight=in_flight, count_tokens=options.count_tokens,
              admin_key=environ.get(ADMIN_KEY_VARIABLE) or None, drains=options.drains)

    def next_runtime(table: RoutingTable, previous: Runtime) -> tuple[Runtime, list[ProviderRuntime]]:
        return build_runtime(table, environ, previous=previous, client_factory=options.client_factory)

    drain: dict[str, float] = {} if options.max_drain is None else {"max_drain": options.max_drain}
    reloader = Reloader(route_file, holder, check_routes=lambda file: check(file, environ),
                        build_runtime=next_runtime, in_flight=in_flight, public=options.public,
                        watch=options.watch, **drain)
    api.health_sections["reload"] = reloader.status
    api.degraded_checks.append(reloader.failure)
    api.identity = {"service": "ccm", "routes": routes_id(route_file)}
    costs: Costs = PriceListCosts()
    if options.db is not None:
        from ccm.metering import LedgerCosts

        costs = ledger_costs = LedgerCosts()  # attached to the ledger when it opens (`_metered`)

    def install(hook: RequestHook | None) -> None:
        api.on_request = hook

    capture = Capture(install, max_files=options.capture_max_files, max_bytes=options.capture_max_bytes)
    service = Service(route_file, checked, holder, api, reloader, records, recent, in_flight, costs, capture)
    admin_key = environ.get(ADMIN_KEY_VARIABLE) or None
    service.mount("/ccm", SessionsApp(holder, recent, costs, admin_key, metering=lambda: api.metering))
    if options.metrics:
        from ccm.metrics import Metrics

        service.metrics = metrics = Metrics(holder, in_flight=in_flight, reloader=reloader,
                                            costs=costs, admin_key=admin_key, multiprocess_dir=options.metrics_dir)
        records.subscribe(metrics.observe)
        service.mount("/metrics", metrics.app)
        service.on_lifespan(metrics.running)
    if options.capture_dir is not None:
        capture.start(options.capture_dir)
    service.on_lifespan(functools.partial(_stopping, capture))
    if options.db is not None:
        service.on_lifespan(functools.partial(_metered, service, options.db, ledger_costs))
    return service


@contextlib.asynccontextmanager
async def _stopping(capture: Capture) -> AsyncIterator[None]:
    """Capture's writer is flushed and stopped at shutdown."""
    try:
        yield
    finally:
        capture.stop()


# While a client that left is read on to its final usage (so its request is billed what the upstream billed), at
# most this many such streams at once, each for at most this long; past either, it is billed ccm's estimate.
DRAINS = 16
DRAIN_SECONDS = 30.0


@contextlib.asynccontextmanager
async def _metered(service: Service, url: str, costs: LedgerCosts) -> AsyncIterator[None]:
    """The usage ledger, open for the server's lifespan: every request metered through it (`ccm.metering`)."""
    from ccm.ledger.journal import Journal, journal_folder
    from ccm.ledger.ledger import Ledger
    from ccm.metering import LedgerMetering

    ledger = await Ledger.open(url)
    await ledger.start()
    try:
        journal = await Journal.open(journal_folder(url), ledger)
    except BaseException:
        await ledger.stop()
        raise
    metering = LedgerMetering(ledger, journal,
                              policy_of=lambda: service.holder.current.table.settings.ledger_failure,
                              policies_of=lambda plan, team: service.holder.current.table.policies_of(plan, team))
    service.api.metering = service.metering = metering
    service.api.drains = Drains(DRAINS, DRAIN_SECONDS)
    service.api.health_sections["ledger"] = metering.health
    costs.attach(metering)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(metering.watch)
            yield
            tasks.cancel_scope.cancel()
    finally:
        service.api.metering = service.metering = None
        costs.attach(None)
        try:
            await journal.close()
        finally:
            await ledger.stop()


# --- the ASGI app around the API -------------------------------------------------------------------------------


async def _serve(service: Service, scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        path: str = scope["path"]
        if path.startswith("/v1/") or path == "/health" or not service._mounts:
            await service.api(scope, receive, send)
            return
        await _mounted(service._mounts, service.api, scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(service, receive, send)


async def _mounted(
    mounts: Sequence[tuple[str, ASGIApp]], fallback: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    path: str = scope["path"]
    for prefix, app in mounts:
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            if prefix != "/":
                scope = {**scope, "root_path": scope.get("root_path", "") + prefix, "path": path[len(prefix):] or "/"}
            await app(scope, receive, send)
            return
    await fallback(scope, receive, send)


async def _lifespan(service: Service, receive: Receive, send: Send) -> None:
    """ASGI's lifespan protocol over `Service.running`: a failure at startup is reported, not raised."""
    message: Message = await receive()
    assert message["type"] == "lifespan.startup"
    started = False
    try:
        async with service.running():
            await send({"type": "lifespan.startup.complete"})
            started = True
            while (await receive())["type"] != "lifespan.shutdown":
                pass
    except Exception as error:  # noqa: BLE001 - the server reports it and stops
        log.exception("the service failed to %s", "stop" if started else "start")
        failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
        await send({"type": failed, "message": f"{type(error).__name__}: {error}"})
        return
    await send({"type": "lifespan.shutdown.complete"})


# --- workers ---------------------------------------------------------------------------------------------------

ROUTES_FILE_VARIABLE = "CCM_ROUTES_FILE"  # how `ccm run --workers N` tells each worker which file to serve
PUBLIC_VARIABLE = "CCM_PUBLIC"
DB_VARIABLE = "CCM_RUN_DB"  # the ledger's URL for the workers ("" for none)
METRICS_VARIABLE = "CCM_METRICS"  # "0": --no-metrics
CAPTURE_VARIABLE = "CCM_CAPTURE_DIR"  # --capture DIR, with each worker's share of the bounds:
CAPTURE_FILES_VARIABLE = "CCM_CAPTURE_MAX_FILES"
CAPTURE_BYTES_VARIABLE = "CCM_CAPTURE_MAX_BYTES"
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's; `ccm run --workers N` sets it


def worker_app() -> ASGIApp:
    """The app of one `--workers` process (called by the server in the worker): the parent checked the file and
    reported its warnings; a worker builds its own service from it, quietly."""
    log_format = os.environ.get(FORMAT_VARIABLE, "text")
    configure_logging(os.environ.get(LEVEL_VARIABLE, "info"), log_format)
    options = ServiceOptions(
        public=os.environ.get(PUBLIC_VARIABLE) == "1",
        db=os.environ.get(DB_VARIABLE) or None,
        subscribers=(request_logger(log_format),),
        metrics=os.environ.get(METRICS_VARIABLE) != "0",
        metrics_dir=os.environ.get(MULTIPROC_VARIABLE) or None,
        capture_dir=os.environ.get(CAPTURE_VARIABLE) or None,
        capture_max_files=int(os.environ.get(CAPTURE_FILES_VARIABLE) or MAX_FILES),
        capture_max_bytes=int(os.environ.get(CAPTURE_BYTES_VARIABLE) or MAX_BYTES),
    )
    return build_service(os.environ[ROUTES_FILE_VARIABLE], os.environ, options).app
