"""Request capture: each request's body and headers written to a folder, in the shape `ccm explain` and in-file
`request file "…"` tests read (the captured fixtures' `{method, path, headers, body}`).

    Capture(install)              off until `start(directory)`; `stop()` ends it; `status()` says how it stands (what
                                  the admin page's switch will call)
    Capture.hook(…)               what the API calls with each request's raw body (`App.on_request`): it queues the
                                  request and returns; a thread writes the file, so a request never waits for a disk
    redacted_headers(headers)     the headers minus every credential

Headers that carry credentials are never written: `authorization`, `proxy-authorization`, `cookie`, `set-cookie`,
and any header whose name contains `key`, `token`, `secret`, `auth`, `password`, `credential` or `session`
(`x-api-key`, `x-ccm-key`, `anthropic-auth-token`, …). The body is written as the client sent it.

Bounded: at most `max_files` files and `max_bytes` bytes that this capture wrote; past either, the oldest of them
are removed (a rolling window of the latest traffic: what a user wants to look at is what just happened). Files
already in the folder are left alone. Requests arriving faster than the disk takes them are dropped (a queue of
`QUEUE_SIZE`), counted in `status()`. Under `ccm run --workers N` the bounds are split between the workers.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("ccm.capture")

MAX_FILES = 1000
MAX_BYTES = 200 * 1024 * 1024
QUEUE_SIZE = 256

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_WORDS = ("key", "token", "secret", "auth", "password", "credential", "session")

# (request_id, path, raw body, headers): what the API hands over for each request
RequestHook = Callable[[str, str, bytes, Mapping[str, str]], None]


def redacted_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value for name, value in headers.items()
        if name.lower() not in _SECRET_HEADERS and not any(word in name.lower() for word in _SECRET_WORDS)
    }


@dataclass(frozen=True, slots=True)
class _Pending:
    name: str
    content: bytes


class Capture:
    """`install` puts the hook on the API (None takes it off): with capture off, requests pay nothing."""

    def __init__(self, install: Callable[[RequestHook | None], None], *, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES) -> None:
        self._install = install
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.directory: Path | None = None
        self._queue: queue.Queue[_Pending | None] | None = None
        self._writer: threading.Thread | None = None
        self._written: collections.deque[tuple[Path, int]] = collections.deque()
        self._bytes = 0
        self.captured = 0
        self.dropped = 0
        self.failed = 0

    @property
    def active(self) -> bool:
        return self._writer is not None

    def start(self, directory: str | os.PathLike[str]) -> None:
        """Capture into `directory` (created if missing) from the next request on."""
        if self.active:
            self.stop()
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.directory = folder
        self._queue = queue.Queue(QUEUE_SIZE)
        self._writer = threading.Thread(target=self._write_all, args=(self._queue,), name="ccm-capture", daemon=True)
        self._writer.start()
        self._install(self.hook)
        log.info("capturing requests into %s (at most %d files, %d MB)", folder, self.max_files,
                 self.max_bytes // (1024 * 1024))

    def stop(self) -> None:
        """Stop capturing; the requests already queued are written first."""
        writer, pending = self._writer, self._queue
        if writer is None or pending is None:
            return
        self._install(None)
        self._writer = self._queue = None
        pending.put(None)
        writer.join(10)

    def status(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "directory": str(self.directory) if self.directory is not None else None,
            "captured": self.captured,
            "files": len(self._written),
            "bytes": self._bytes,
            "dropped": self.dropped,
            "failed": self.failed,
            "max_files": self.max_files,
            "max_bytes": self.max_bytes,
        }

    def hook(self, request_id: str, path: str, raw: bytes, headers: Mapping[str, str]) -> None:
        """On the request's task: build the file's bytes without parsing the body again (it parsed: it is JSON)
        and queue them."""
        pending = self._queue
        if pending is None:
            return
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}"
        head = orjson.dumps({"method": "POST", "path": path, "headers": redacted_headers(headers)})
        content = head[:-1] + b',"body":' + raw + b"}\n"
        try:
            pending.put_nowait(_Pending(f"{stamp}-{request_id}.json", content))
        except queue.Full:
            self.dropped += 1

    def _write_all(self, pending: queue.Queue[_Pending | None]) -> None:
        while (item := pending.get()) is not None:
            directory = self.directory
            if directory is None:
                continue
            path = directory / item.name
            try:
                temporary = path.with_name("." + item.name + ".tmp")
                temporary.write_bytes(item.content)
                temporary.replace(path)  # a reader never sees half a file
            except OSError as error:
                self.failed += 1
                if self.failed == 1 or self.failed % 100 == 0:
                    log.warning("capture: cannot write %s (%s); %d failure(s) so far", path, error, self.failed)
                continue
            self.captured += 1
            self._written.append((path, len(item.content)))
            self._bytes += len(item.content)
            self._evict()

    def _evict(self) -> None:
        while self._written and (len(self._written) > self.max_files or self._bytes > self.max_bytes):
            path, size = self._written.popleft()
            self._bytes -= size
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("capture: cannot remove %s (%s)", path, error)
