"""Reading the files a route file names (`include "…"`, `request file "…"`) as a hostile route file would ask.

    include_roots(base_dir, environ) -> tuple[Path, ...]
    read_confined(base_dir, written, roots, limit) -> bytes        raises FileRefused

A route file is code that may come from a pull request, checked in CI where the environment holds keys. So a file
it names must be: inside the route file's folder or a folder named in `CCM_INCLUDE_PATH` (os.pathsep-separated),
once symlinks are resolved (`../`, `/etc/shadow`, `/proc/self/environ` are refused); a regular file (checked with
os.stat before opening, and again on the open descriptor, which is opened non-blocking so a FIFO cannot hang the
check; `/dev/zero` is no regular file); and at most `limit` bytes (read up to one byte more, never to the end of
whatever it is). Why a file was refused never quotes it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

INCLUDE_PATH_VARIABLE = "CCM_INCLUDE_PATH"
MAX_INCLUDE_BYTES = 1024 * 1024  # 1 MB: a route file of ~20,000 rules
MAX_REQUEST_FILE_BYTES = 32 * 1024 * 1024  # a captured request: as large as the default body limit


class FileRefused(Exception):
    """A named file that is not read, and why (never its content)."""

    def __init__(self, message: str, hint: str | None = None, *, missing: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.missing = missing


def include_roots(base_dir: Path, environ: Mapping[str, str]) -> tuple[Path, ...]:
    """The folders a route file in `base_dir` may read from: that folder, and each one `CCM_INCLUDE_PATH` names."""
    named = [Path(part) for part in environ.get(INCLUDE_PATH_VARIABLE, "").split(os.pathsep) if part.strip()]
    return tuple(dict.fromkeys(folder.resolve() for folder in [base_dir, *named]))


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"


def read_confined(base_dir: Path, written: str, roots: tuple[Path, ...], limit: int) -> bytes:
    """The bytes of `written` (relative to `base_dir`, or absolute) when it is a regular file of at most `limit` bytes
    inside one of `roots`."""
    path = (base_dir / written).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        folders = ", ".join(str(root) for root in roots)
        raise FileRefused("it is outside the route file's folder",
                          f"files are read only inside {folders}; name another folder in {INCLUDE_PATH_VARIABLE}")
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise FileRefused("not found", missing=True) from None
    except OSError as error:
        raise FileRefused(f"cannot read it: {error.__class__.__name__}") from None
    if not stat.S_ISREG(before.st_mode):
        raise FileRefused("it is not a regular file")
    if before.st_size > limit:
        raise FileRefused(f"it is larger than {_size(limit)}")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise FileRefused(f"cannot read it: {error.__class__.__name__}") from None
    with os.fdopen(descriptor, "rb") as file:
        opened = os.fstat(file.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise FileRefused("it is not a regular file")  # swapped for something else between stat and open
        data = file.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"it is larger than {_size(limit)}")
    return data
