"""Hot reload: the route file and its includes are watched; a good save replaces the table, a bad one never does.

    Reloader        watches the route file and every file in `table.sources` (`ccm.core.watch`), and reloads on
                    SIGHUP; on a change it checks the file off the event loop (the one `check`, injected: compile
                    and run its own tests), builds the next runtime (reusing the providers whose settings did not
                    change) and swaps `holder.current`; `status()` is the `reload` object of `GET /health`
    diff_tables     the one-line summary of what a reload changed

The service (`ccm.service`) runs the reloader for the server's lifespan (`Reloader.run`) and gives it the same
`InFlight` the API app counts requests with, so the providers a reload retired are closed only once every request
that could still be using them has finished.

A reload is all or nothing. Requests read `holder.current` once when they arrive, so a request that arrived before
the swap finishes with the runtime (decision, adapters, pooled clients) it started with, and every later request
sees the new table. A file that does not compile, or whose tests fail, is rejected: the last good table keeps
serving, the rendered diagnostics are logged and `status()["last_error"]` reports the failure until a good file
arrives. A file that would leave a server listening beyond loopback without inbound auth is rejected the same way
(`public=True`): a save must never open the server to the network. Per-provider state (pooled clients, limiters, circuit
breakers) lives on the `ProviderRuntime`, which `build_runtime` carries over unchanged for every provider whose settings
did not change; so it survives a reload.

Reloads are serialised: a change arriving during a reload is picked up by the next one, never lost. Nothing here
runs per request except `InFlight`'s two counter updates.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ccm.core.inflight import InFlight
from ccm.core.runtime import ProviderRuntime, Runtime, RuntimeHolder, close_providers
from ccm.core.watch import watch
from ccm.diagnostics import UNSET_VARIABLE
from ccm.frozen import frozen
from ccm.table import RoutingTable

log = logging.getLogger("ccm.reload")

# Retired providers are closed once their requests finish, or after this many seconds at most: a request that
# still uses them then has outlived every provider timeout (`timeouts.total` defaults to 1800 s).
MAX_DRAIN_SECONDS = 1800.0
HISTORY = 100  # reloads kept for the admin page

class Diagnostic(Protocol):
    """What the reloader needs of a compiler diagnostic (`ccm.diagnostics.Diagnostic`)."""

    @property
    def code(self) -> str | None: ...

    def render(self) -> str: ...


class CheckedFile(Protocol):
    """What the reloader needs of a checked route file (`ccm.compile.check.Checked`)."""

    @property
    def table(self) -> RoutingTable | None: ...

    @property
    def problems(self) -> Sequence[Diagnostic]: ...

    @property
    def warnings(self) -> Sequence[Diagnostic]: ...


# The route file, checked (blocking, CPU-bound: run on a worker thread); and the next runtime for a good table,
# built as the first one was (same environment, same client factory), reusing what the previous one can lend.
CheckRoutes = Callable[[Path], CheckedFile]
BuildRuntime = Callable[[RoutingTable, Runtime], tuple[Runtime, list[ProviderRuntime]]]


def diff_tables(old: RoutingTable, new: RoutingTable) -> str:
    """What changed between two tables, in one line: `rules 9→10, models +fast, providers ~deepseek`.

    Where things were written (spans) is ignored: a comment added at the top of the file changes nothing."""
    parts: list[str] = []
    if len(old.rules) != len(new.rules):
        parts.append(f"rules {len(old.rules)}→{len(new.rules)}")
    else:
        changed = [i for i, (a, b) in enumerate(zip(old.rules, new.rules, strict=True), 1)
                   if _meaning(a) != _meaning(b)]
        if changed:
            parts.append("rules " + " ".join(f"~#{i}" for i in changed))
    for label, before, after in (
        ("models", old.models, new.models),
        ("providers", old.providers, new.providers),
    ):
        names = _name_changes(before, after)
        if names:
            parts.append(f"{label} {names}")
    if old.fallbacks != new.fallbacks:
        parts.append("fallbacks changed")
    if old.retry != new.retry:
        parts.append("retry changed")
    if old.settings != new.settings:
        parts.append("settings changed")
    if len(old.tests) != len(new.tests):
        parts.append(f"tests {len(old.tests)}→{len(new.tests)}")
    elif [_meaning(t) for t in old.tests] != [_meaning(t) for t in new.tests]:
        parts.append("tests changed")
    return ", ".join(parts) or "no routing changes"


def _meaning(item: Any) -> Any:
    return item.model_dump(exclude={"span"})


def _name_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    added = [f"+{name}" for name in after if name not in before]
    removed = [f"-{name}" for name in before if name not in after]
    changed = [f"~{name}" for name in after if name in before and _meaning(before[name]) != _meaning(after[name])]
    return " ".join(added + removed + changed)


@frozen
class ReloadEvent:
    """One reload, for the history the admin page shows: when, on what (a save, SIGHUP, the admin page), and what
    came of it (the one-line diff summary, or the first problem)."""

    at: float
    trigger: str
    ok: bool
    version: str  # the version serving after it
    summary: str


class Reloader:
    """Keeps `holder.current` in step with the route file, for as long as `run` runs (the service's lifespan)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        holder: RuntimeHolder,
        *,
        check_routes: CheckRoutes,
        build_runtime: BuildRuntime,
        in_flight: InFlight,
        public: bool = False,
        watch: bool = True,
        max_drain: float = MAX_DRAIN_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.holder = holder
        self.in_flight = in_flight
        self.history: collections.deque[ReloadEvent] = collections.deque(maxlen=HISTORY)
        self._check = check_routes
        self._build = build_runtime
        self._public = public  # listening beyond loopback: a table without inbound auth is refused
        self._watch_enabled = watch
        self._max_drain = max_drain
        self._lock: anyio.Lock | None = None  # made in `run`, inside the event loop
        self._tasks: TaskGroup | None = None
        self._retiring: list[ProviderRuntime] = []
        self._sources_changed: anyio.Event | None = None
        self._loaded_at = time.time()
        self._reloads = 0
        self._last_error: dict[str, str] | None = None
        self._watched = self._relevant_paths(holder.current.table.sources)

    def failure(self) -> str | None:
        """Why /health says `degraded` on the reloader's account: the last save was rejected (None once one loads)."""
        if self._last_error is None:
            return None
        return f"the last reload failed, still serving v{self.holder.current.table.version}: " \
               f"{self._last_error['message']}"

    def status(self) -> dict[str, Any]:
        """The reload state for /health: `last_error` stays set from a rejected save until a good one arrives."""
        return {
            "version": self.holder.current.table.version,
            "loaded_at": _iso(self._loaded_at),
            "last_error": self._last_error,
            "reloads": self._reloads,
        }

    # --- running -----------------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch and reload until cancelled; returns to `task_status` once the watcher and SIGHUP are in place.
        On the way out, the providers still waiting for their requests to drain are closed."""
        self._lock = anyio.Lock()
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                await tasks.start(self._reload_on_sighup)
                if self._watch_enabled:
                    await tasks.start(self._watch)
                task_status.started()
        finally:
            self._tasks = None
            with anyio.CancelScope(shield=True):  # shutting down: nobody is left to drain for
                retiring, self._retiring = self._retiring, []
                await close_providers(retiring)

    async def reload(self, why: str = "change") -> bool:
        """Recompile and, if the file is good, swap it in. True when the serving table is the file's table."""
        if self._tasks is None or self._lock is None:
            raise RuntimeError("Reloader.reload() needs Reloader.run() to be running (it closes retired providers)")
        async with self._lock:
            return await self._reload(why)

    async def _reload(self, why: str) -> bool:
        name = self.path.name
        started = time.perf_counter()
        try:
            compiled = await anyio.to_thread.run_sync(self._check, self.path)
        except OSError as error:
            return self._reject(why, f"{name}: cannot read: {error.strerror or error}", "")
        except Exception as error:  # noqa: BLE001 - a compiler crash must not take the server down
            log.exception("compiling %s crashed", name)
            return self._reject(why, f"{name}: internal error while compiling ({type(error).__name__})", "")
        for warning in compiled.warnings:
            if warning.code != UNSET_VARIABLE:  # said once, per provider, when the new table is swapped in
                log.warning("%s", warning.render())
        if compiled.table is None:
            rendered = [d.render() for d in compiled.problems] or [f"{name}: compilation failed"]
            return self._reject(why, rendered[0].splitlines()[0], "\n\n".join(rendered))

        table = compiled.table
        current = self.holder.current
        if self._public and not table.settings.auth:
            return self._reject(why, f"{name}: the file declares no inbound `auth` key, and ccm listens beyond "
                                     "loopback: serving it would let anyone who can reach the port spend your keys", "")
        self._watch_sources(table.sources)
        if table.version == current.table.version:
            if self._last_error is not None:
                log.info("%s is good again (v%s), unchanged from the table being served", name, table.version)
            else:  # said too, so that a SIGHUP (or a save of comments) is never met with silence
                log.info("reloaded %s on %s: unchanged, still serving v%s", name, why, table.version)
            self._last_error = None
            return True
        try:
            runtime, retired = self._build(table, current)
        except Exception as error:  # noqa: BLE001 - e.g. an adapter that cannot be loaded: keep the old table
            log.exception("building the runtime for %s v%s failed", name, table.version)
            return self._reject(why, f"{name}: cannot start the new table ({type(error).__name__}: {error})", "")

        # The swap and the epoch change happen in one event-loop step: no request can arrive in between.
        previous = self.holder.swap(runtime)
        ended = self.in_flight.advance()
        self._loaded_at = time.time()
        self._reloads += 1
        self._last_error = None
        if retired:
            self._retire(retired, ended)
        took = (time.perf_counter() - started) * 1000
        summary = diff_tables(previous.table, table)
        self.history.append(ReloadEvent(time.time(), why, True, table.version, summary))
        log.info("reloaded %s (v%s) on %s in %.0f ms: %s", name, table.version, why, took, summary)
        reused = {id(p) for p in previous.providers.values()}
        for provider in runtime.unconfigured:
            if id(provider) not in reused:
                log.warning("provider %s is not configured: %s", provider.provider.name, provider.endpoint.missing)
        return True

    def _reject(self, why: str, first_error: str, rendered: str) -> bool:
        self._last_error = {"at": _iso(time.time()), "message": first_error}
        version = self.holder.current.table.version
        self.history.append(ReloadEvent(time.time(), why, False, version, first_error))
        log.error(
            "reload of %s on %s rejected; still serving v%s\n%s", self.path.name, why, version, rendered or first_error
        )
        return False

    # --- closing what a reload retired ---------------------------------------------------------------------------

    def _retire(self, providers: list[ProviderRuntime], epoch: int) -> None:
        self._retiring.extend(providers)
        assert self._tasks is not None  # checked by reload()
        self._tasks.start_soon(self._close_after_drain, providers, epoch)

    async def _close_after_drain(self, providers: list[ProviderRuntime], epoch: int) -> None:
        with anyio.move_on_after(self._max_drain) as bound:
            await self.in_flight.wait_drained(epoch)
        if bound.cancelled_caught:
            log.warning(
                "closing %s with %d request(s) still running after %.0f s",
                ", ".join(p.provider.name for p in providers), self.in_flight.running(epoch), self._max_drain,
            )
        closing = {id(p) for p in providers}
        self._retiring = [p for p in self._retiring if id(p) not in closing]
        await close_providers(providers)
        log.debug("closed retired provider(s) %s", ", ".join(p.provider.name for p in providers))

    # --- triggers ------------------------------------------------------------------------------------------------

    async def _reload_on_sighup(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with contextlib.ExitStack() as stack:
            try:
                signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGHUP))
            except (ValueError, RuntimeError, NotImplementedError, AttributeError):
                # Not the main thread, or a platform without SIGHUP: file changes still reload.
                log.debug("SIGHUP reload unavailable here")
                task_status.started()
                return
            task_status.started()
            async for _ in signals:
                await self.reload("SIGHUP")

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch the folders of the table's sources until cancelled (one that does not exist, from the moment it
        does). Whenever the watch starts again (the sources moved, a folder went away or came back), the file is
        reloaded once the new watch is in place: a save made meanwhile is neither missed nor raced."""
        ready = False
        catch_up: str | None = None  # why to reload once the next watch has begun

        def started() -> None:
            nonlocal ready, catch_up
            if not ready:
                ready = True
                task_status.started()
            if catch_up is not None:
                assert self._tasks is not None
                self._tasks.start_soon(self.reload, catch_up)
                catch_up = None

        async def on_change(paths: set[str]) -> None:
            await self.reload("save of " + ", ".join(sorted(Path(p).name for p in paths)))

        while True:
            wanted = sorted({os.path.dirname(p) for p in self._watched})
            present = [d for d in wanted if os.path.isdir(d)]
            self._sources_changed = restart = anyio.Event()
            async with anyio.create_task_group() as tasks:
                if len(present) < len(wanted):  # the watch tells when a folder goes; this, when one comes back
                    tasks.start_soon(_until_one_appears, [d for d in wanted if d not in present], restart)
                if present:
                    await watch(present, self._is_relevant, on_change, restart, started)
                else:
                    started()
                    await restart.wait()
                tasks.cancel_scope.cancel()
            catch_up = "change of the watched folders"

    def _is_relevant(self, path: str) -> bool:
        if path in self._watched:
            return True
        # While the file is broken its includes are unknown (say, one is being created): any route file counts.
        return self._last_error is not None and path.endswith(self.path.suffix or ".ccm")

    def _watch_sources(self, sources: Iterable[str]) -> None:
        watched = self._relevant_paths(sources)
        moved = {os.path.dirname(p) for p in watched} != {os.path.dirname(p) for p in self._watched}
        if moved and self._sources_changed is not None:
            self._sources_changed.set()
        self._watched = watched

    def _relevant_paths(self, sources: Iterable[str]) -> frozenset[str]:
        # Both the path as written and the file it resolves to: a symlinked route file (dotfiles) is edited at its
        # target, in another directory.
        paths: set[str] = set()
        for source in (str(self.path), *sources):
            written = os.path.abspath(source)
            paths.update((written, os.path.realpath(written)))
        return frozenset(paths)


async def _until_one_appears(missing: Sequence[str], stop: anyio.Event) -> None:
    """Look every second whether one of the `missing` folders exists again; then set `stop`."""
    while not stop.is_set():
        await anyio.sleep(1.0)
        if any(map(os.path.isdir, missing)):
            stop.set()


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
