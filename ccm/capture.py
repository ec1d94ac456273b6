"""Request capture: each request's body and headers written to a folder, in the shape `ccm explain` and in-file
`request file "…"` tests read (the captured fixtures' `{method, path, headers, body}`).

    Capture(install)              off until `start(directory)`; `stop()` ends it; `status()` says how it stands (what
                                  the admin page's switch shows, `ccm.web.admin`)
    Capture.hook(…)               what the API calls with each request's raw body (`App.on_request`): it queues the
                                  request and returns; a thread writes the file, so a request never waits for a disk
    capture_folder(text)          a folder typed by a person (the admin page), checked: absolute, not a file
    default_folder(environ)       ${XDG_STATE_HOME:-~/.local/state}/ccm/capture, the folder the admin page offers
    redacted_headers(headers)     the headers minus every credential

Headers that carry credentials are never written: `authorization`, `proxy-authorization`, `cookie`, `set-cookie`,
and any header whose name contains `key`, `token`, `secret`, `auth`, `password`, `credential` or `session`
(`x-api-key`, `x-ccm-key`, `anthropic-auth-token`, …). The body is written as the client sent it.

Bounded: at most `max_files` files and `max_bytes` bytes that this capture wrote; past either, the oldest of them
are removed (a rolling window of the latest traffic: what a user wants to look at is what just happened). Files
already in the folder are left alone, the ones an earlier `start` wrote included: each `start` begins a new capture,
with its own counts. A folder `start` creates is private to ccm's user (0700): the bodies are the user's prompts.
Requests arriving faster than the disk takes them are dropped (a queue of `QUEUE_SIZE`), counted in `status()`.
Under `ccm run --workers N` the bounds are split between the workers.

Only `/v1/messages` and `/v1/messages/count_tokens` bodies that parsed are captured (what `ccm explain` can read).
File names sort in arrival order: `20260105T101502.123456-req_ccm_….json`.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ccm.frozen import frozen

log = logging.getLogger("ccm.capture")

MAX_FILES = 1000
MAX_BYTES = 200 * 1024 * 1024
QUEUE_SIZE = 256

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_WORDS = ("key", "token", "secret", "auth", "password", "credential", "session")

# (request_id, path, raw body, headers): what the API hands over for each request
RequestHook = Callable[[str, str, bytes, Mapping[str, str]], None]


class CaptureError(Exception):
    """A folder that capture cannot use; the message says why, to a person."""


def redacted_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value for name, value in headers.items()
        if name.lower() not in _SECRET_HEADERS and not any(word in name.lower() for word in _SECRET_WORDS)
    }


def default_folder(environ: Mapping[str, str]) -> Path:
    """Where the admin page proposes to capture: captures are state, kept apart from config and data (XDG)."""
    state = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "ccm" / "capture"


def capture_folder(text: str) -> Path:
    """A folder typed on the admin page: absolute (`~` expanded), since a relative one would be relative to
    wherever ccm happened to start. Whether it can be created and written is `Capture.start`'s check."""
    text = text.strip()
    if not text:
        raise CaptureError("name the folder to capture into")
    if "\x00" in text:
        raise CaptureError("a folder name cannot contain a NUL character")
    folder = Path(text).expanduser()
    if not folder.is_absolute():
        raise CaptureError(f"`{text}` is a relative path: give the whole path, e.g. /home/you/ccm-capture")
    return folder


def _prepare(folder: Path) -> None:
    """Create `folder` (private: it will hold prompts) unless it is there, and check that ccm can write into it."""
    if folder.exists() and not folder.is_dir():
        raise CaptureError(f"{folder} is a file, not a folder")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise CaptureError(f"cannot create {folder}: {error.strerror or error}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CaptureError(f"{folder} is not writable by ccm")


@frozen
class _Pending:
    name: str
    content: bytes


@dataclass(slots=True)
class _Run:
    """One capture, from `start` to `stop`: its folder, its queue and the thread writing from it (both None once
    stopped), and what it wrote — the bounds count these files only."""

    folder: Path
    queue: queue.Queue[_Pending | None] | None
    writer: threading.Thread | None = None
    written: collections.deque[tuple[Path, int]] = field(default_factory=collections.deque)
    bytes: int = 0
    captured: int = 0
    dropped: int = 0
    failed: int = 0

    COUNTED = ("captured", "files", "bytes", "dropped", "failed")

    def counts(self) -> dict[str, int]:
        return {"captured": self.captured, "files": len(self.written), "bytes": self.bytes, "dropped": self.dropped,
                "failed": self.failed}


class Capture:
    """`install` puts the hook on the API (None takes it off): with capture off, requests pay nothing."""

    def __init__(self, install: Callable[[RequestHook | None], None], *, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES) -> None:
        self._install = install
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._run: _Run | None = None  # the latest capture, running or stopped: what `status()` shows

    @property
    def active(self) -> bool:
        return self._run is not None and self._run.queue is not None

    def start(self, directory: str | os.PathLike[str]) -> None:
        """Capture into `directory` (created if missing) from the next request on, stopping a capture already
        running. `CaptureError`, with nothing changed, when the folder cannot be used."""
        folder = Path(directory)
        _prepare(folder)
        self.stop()
        pending: queue.Queue[_Pending | None] = queue.Queue(QUEUE_SIZE)
        run = self._run = _Run(folder, pending)
        run.writer = threading.Thread(target=self._write_all, args=(run, pending), name="ccm-capture", daemon=True)
        run.writer.start()
        self._install(self.hook)
        log.info("capturing requests into %s (at most %d files, %d MB)", folder, self.max_files,
                 self.max_bytes // (1024 * 1024))

    def stop(self) -> None:
        """Stop capturing; the requests already queued are written first."""
        run = self._run
        if run is None or run.queue is None:
            return
        assert run.writer is not None  # started with its queue
        self._install(None)
        pending, writer, run.queue, run.writer = run.queue, run.writer, None, None
        pending.put(None)
        writer.join(10)

    def status(self) -> dict[str, Any]:
        """How capture stands: on or off, the latest capture's folder and counts, the bounds."""
        run = self._run
        return {
            "active": self.active,
            "directory": str(run.folder) if run is not None else None,
            **(run.counts() if run is not None else dict.fromkeys(_Run.COUNTED, 0)),
            "max_files": self.max_files,
            "max_bytes": self.max_bytes,
        }

    def hook(self, request_id: str, path: str, raw: bytes, headers: Mapping[str, str]) -> None:
        """On the request's task: build the file's bytes without parsing the body again (it parsed: it is JSON)
        and queue them."""
        run = self._run
        if run is None or (pending := run.queue) is None:
            return
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}"
        head = orjson.dumps({"method": "POST", "path": path, "headers": redacted_headers(headers)})
        content = head[:-1] + b',"body":' + raw + b"}\n"
        try:
            pending.put_nowait(_Pending(f"{stamp}-{request_id}.json", content))
        except queue.Full:
            run.dropped += 1

    def _write_all(self, run: _Run, pending: queue.Queue[_Pending | None]) -> None:
        """The writer of one run (its own queue and folder: a run started meanwhile is not this one's business)."""
        while (item := pending.get()) is not None:
            path = run.folder / item.name
            try:
                temporary = path.with_name("." + item.name + ".tmp")
                temporary.write_bytes(item.content)
                temporary.replace(path)  # a reader never sees half a file
            except OSError as error:
                run.failed += 1
                if run.failed == 1 or run.failed % 100 == 0:
                    log.warning("capture: cannot write %s (%s); %d failure(s) so far", path, error, run.failed)
                continue
            run.captured += 1
            run.written.append((path, len(item.content)))
            run.bytes += len(item.content)
            self._evict(run)

    def _evict(self, run: _Run) -> None:
        while run.written and (len(run.written) > self.max_files or run.bytes > self.max_bytes):
            path, size = run.written.popleft()
            run.bytes -= size
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("capture: cannot remove %s (%s)", path, error)
