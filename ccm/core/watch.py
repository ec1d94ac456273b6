"""Saves in the route file's folders, as the reloader hears of them.

    watch(directories, relevant, on_change, stop, started)
        calls `started()` once the folders are watched, then `await on_change(paths)` for each burst of saves of
        paths `relevant` accepts; returns when `stop` is set or a watched folder is gone (renamed, deleted,
        unmounted) or was gone before it could be watched, for the caller to look again.

On Linux the kernel's inotify is read on the event loop itself: no thread, and nothing runs while nothing changes.
watchfiles, the portable watcher (macOS, the BSDs; or a libc without inotify), runs its Rust watcher on a worker
thread that takes the GIL every STEP_MS to look for a stop and for signals: 113 wake-ups a second in an idle
`ccm run` (0.5% of a core), and under load a hand-off of the GIL the event loop waits for (docs/benchmarks.md).
Where inotify is there but its limits are reached (`fs.inotify.max_user_instances`, `max_user_watches`),
watchfiles could not use it either: it polls instead.

Either way a burst is one call: once a relevant change arrived, the watcher waits until none came for STEP_MS (at
most DEBOUNCE_MS after the first), so an editor that writes a file twice, or replaces it by rename, reloads once,
about STEP_MS after its last write.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterable

import anyio

log = logging.getLogger("ccm.reload")

DEBOUNCE_MS = 50
STEP_MS = 10
# How often watchfiles' thread returns when nothing changed (its first return says watching has begun).
IDLE_WAKE_MS = 200
POLL_MS = 500  # how often watchfiles looks at the files when it must poll
# inotify_init1 / inotify_add_watch failing for want of instances, watches or kernel memory
OUT_OF_WATCHES = (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM)

Relevant = Callable[[str], bool]
OnChange = Callable[[set[str]], Awaitable[None]]

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
# What a save looks like, however the editor makes it: written in place, replaced by rename, deleted and created.
SAVES = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
# The watched folder itself went away: its watch is over.
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of NUL-padded name


class _Inotify:
    """An inotify instance (non-blocking, closed on exec) and its watches, through libc."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._libc = libc
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise _os_error()
        self.folders: dict[int, str] = {}

    def add(self, folder: str) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), SAVES | GONE | IN_ONLYDIR)
        if wd < 0:
            raise _os_error(folder)
        self.folders[wd] = folder

    def read(self) -> tuple[set[str], bool]:
        """The paths the queued events name, and whether the watch is over: a watched folder is gone, or events
        were lost (the queue overflowed; the caller reloads either way)."""
        paths: set[str] = set()
        over = False
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return paths, over
            offset = 0
            while offset < len(data):
                wd, mask, _, length = EVENT.unpack_from(data, offset)
                name = data[offset + EVENT.size: offset + EVENT.size + length].rstrip(b"\0")
                offset += EVENT.size + length
                folder = self.folders.get(wd)
                if mask & (GONE | IN_Q_OVERFLOW):
                    over = True
                elif folder is not None and name:
                    paths.add(os.path.join(folder, os.fsdecode(name)))

    def close(self) -> None:
        os.close(self.fd)


def _os_error(path: str | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), path)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """libc with inotify, or None where there is none (not Linux, or a libc without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):  # no libc to load, or one without inotify
        return None
    return libc


async def watch(directories: Iterable[str], relevant: Relevant, on_change: OnChange, stop: anyio.Event,
                started: Callable[[], None]) -> None:
    folders = list(directories)
    libc = _libc()
    inotify: _Inotify | None = None
    polling = False
    if libc is not None:
        try:
            inotify = _Inotify(libc)
            for folder in folders:
                inotify.add(folder)
        except OSError as error:
            if inotify is not None:
                inotify.close()
            if error.errno == errno.ENOENT:  # a folder went away since it was listed: the caller looks again
                return
            polling = error.errno in OUT_OF_WATCHES
            log.warning("watching %s with watchfiles%s: inotify failed (%s)", ", ".join(folders),
                        f", polling every {POLL_MS} ms" if polling else "", error)
            inotify = None
    if inotify is None:
        await _watch_with_watchfiles(folders, relevant, on_change, stop, started, polling)
        return
    try:
        started()
        await _read_bursts(inotify, relevant, on_change, stop)
    finally:
        inotify.close()


async def _read_bursts(inotify: _Inotify, relevant: Relevant, on_change: OnChange, stop: anyio.Event) -> None:
    """Until `stop` or the watch is over: wait for events, gather a burst of them, hand its relevant paths on."""
    while await _readable(inotify.fd, stop):
        paths, over = inotify.read()
        changed = {path for path in paths if relevant(path)}
        first = time.monotonic()
        while changed and not over and time.monotonic() - first < DEBOUNCE_MS / 1000:
            with anyio.move_on_after(STEP_MS / 1000):
                await _readable(inotify.fd, stop)
            more, over = inotify.read()
            if not more:
                break
            changed.update(path for path in more if relevant(path))
        if changed:
            await on_change(changed)
        if over:
            return


async def _readable(fd: int, stop: anyio.Event) -> bool:
    """Wait until `fd` can be read (True) or `stop` is set (False). Stopping cancels only this wait, never a burst
    being handed on: the reload that sets `stop` (its sources moved) runs to its end."""
    if stop.is_set():
        return False
    async with anyio.create_task_group() as tasks:
        async def on_stop() -> None:
            await stop.wait()
            tasks.cancel_scope.cancel()

        tasks.start_soon(on_stop)
        await anyio.wait_readable(fd)
        tasks.cancel_scope.cancel()
    return not stop.is_set()


async def _watch_with_watchfiles(directories: list[str], relevant: Relevant, on_change: OnChange,
                                 stop: anyio.Event, started: Callable[[], None], polling: bool) -> None:
    import watchfiles

    # watchfiles logs "1 change detected" at INFO on every save; the reload's own line says more.
    watchfiles_log = logging.getLogger("watchfiles.main")
    if watchfiles_log.level == logging.NOTSET:
        watchfiles_log.setLevel(logging.WARNING)
    if not all(map(os.path.isdir, directories)):  # watchfiles would watch nothing there: the caller looks again
        return
    began = False
    watched = set(directories)
    async for changes in watchfiles.awatch(
        *directories,
        watch_filter=lambda _, path: path in watched or relevant(path),
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        rust_timeout=IDLE_WAKE_MS,
        yield_on_timeout=True,
        stop_event=stop,
        recursive=False,
        ignore_permission_denied=True,
        force_polling=polling,
        poll_delay_ms=POLL_MS,
    ):
        if not began:
            began = True
            started()
        saved = {path for _, path in changes} - watched
        if saved:
            await on_change(saved)
        if any(change == watchfiles.Change.deleted and path in watched for change, path in changes):
            return  # a watched folder is gone (a folder made again in its place is not watched by this watch)
