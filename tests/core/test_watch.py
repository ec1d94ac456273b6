"""The route file's watcher (ccm.core.watch) on real folders, both ways it can watch: the kernel's inotify read on the
event loop (Linux) and watchfiles' thread (everywhere else, and where inotify cannot be had)."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

import ccm.core.watch
from ccm.core.watch import watch
from tests.reload.conftest import eventually


class Watched:
    """`watch` on one folder; what it handed on, burst by burst."""

    def __init__(self, folder: Path, relevant: set[str], stop_in_handler: bool = False) -> None:
        self.folder = folder
        self.relevant = {str(folder / name) for name in relevant}
        self.bursts: list[set[str]] = []
        self.stop = anyio.Event()
        self.started = anyio.Event()
        self.returned = anyio.Event()
        self.stop_in_handler = stop_in_handler  # as a reload does when the table's sources moved

    async def on_change(self, paths: set[str]) -> None:
        self.bursts.append(paths)
        if self.stop_in_handler:
            self.stop.set()
            await anyio.sleep(0.1)  # a reload that goes on after setting stop: it must not be cancelled
            self.bursts.append({"finished"})

    async def run(self) -> None:
        await watch([str(self.folder)], self.relevant.__contains__, self.on_change, self.stop, self.started.set)
        self.returned.set()


@asynccontextmanager
async def watching(folder: Path, *, stop_in_handler: bool = False) -> AsyncIterator[Watched]:
    """`Watched` on `folder` for routes.ccm, in a task of its own, watching when this yields; stopped after."""
    watched = Watched(folder, {"routes.ccm"}, stop_in_handler)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watched.run)
        await watched.started.wait()
        yield watched
        watched.stop.set()


async def test_a_save_is_one_burst_naming_the_file(watcher: str, tmp_path: Path) -> None:
    route_file = tmp_path / "routes.ccm"
    route_file.write_text("v1")
    async with watching(tmp_path) as watched:
        route_file.write_text("v2")
        await eventually(lambda: bool(watched.bursts), what="a burst")
        await anyio.sleep(0.3)  # nothing more comes of one save
        assert watched.bursts == [{str(route_file)}]
    assert watched.returned.is_set()


async def test_an_editors_save_by_rename_and_a_double_write_are_one_burst_each(watcher: str, tmp_path: Path) -> None:
    route_file = tmp_path / "routes.ccm"
    route_file.write_text("v1")
    async with watching(tmp_path) as watched:
        temporary = tmp_path / ".routes.ccm.swp"
        temporary.write_text("v2")
        os.replace(temporary, route_file)
        await eventually(lambda: bool(watched.bursts), what="a burst")
        await anyio.sleep(0.3)
        route_file.write_text("v3")
        route_file.write_text("v3, saved again at once")
        await eventually(lambda: len(watched.bursts) >= 2, what="a second burst")
        await anyio.sleep(0.3)
        assert watched.bursts == [{str(route_file)}, {str(route_file)}]


async def test_files_it_does_not_watch_are_not_handed_on(watcher: str, tmp_path: Path) -> None:
    async with watching(tmp_path) as watched:
        (tmp_path / "ccm.log").write_text("a line")
        (tmp_path / "notes.txt").write_text("a note")
        await anyio.sleep(0.3)
        (tmp_path / "routes.ccm").write_text("v1")
        await eventually(lambda: bool(watched.bursts), what="a burst")
        assert watched.bursts == [{str(tmp_path / "routes.ccm")}]


async def test_stop_set_by_the_handler_ends_the_watch_after_the_handler_finishes(watcher: str, tmp_path: Path) -> None:
    async with watching(tmp_path, stop_in_handler=True) as watched:
        (tmp_path / "routes.ccm").write_text("v1")
        await eventually(watched.returned.is_set, what="the watch to end")
    assert watched.bursts == [{str(tmp_path / "routes.ccm")}, {"finished"}]


@pytest.mark.parametrize("how", ["renamed", "deleted"])
async def test_the_watch_ends_when_its_folder_is_gone(watcher: str, how: str, tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "routes.ccm").write_text("v1")
    async with watching(folder) as watched:
        if how == "renamed":
            folder.rename(tmp_path / "config.old")
        else:
            shutil.rmtree(folder)
        await eventually(watched.returned.is_set, what="the watch to end")


async def test_a_folder_gone_before_it_is_watched_returns_at_once(watcher: str, tmp_path: Path) -> None:
    watched = Watched(tmp_path / "missing", {"routes.ccm"})
    with anyio.fail_after(5):
        await watched.run()
    assert not watched.started.is_set()


async def test_an_idle_inotify_watch_runs_no_thread(tmp_path: Path) -> None:
    """Nothing changes: the watch is a file descriptor the event loop waits on; no thread wakes to look."""
    threads = threading.active_count()
    async with watching(tmp_path) as watched:
        await anyio.sleep(0.3)
        assert threading.active_count() == threads
        assert not watched.bursts


async def test_out_of_inotify_watches_it_polls_and_still_hears_a_save(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """fs.inotify.max_user_watches reached: watchfiles could not use inotify either, so it polls."""
    def full(self: object, folder: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)

    monkeypatch.setattr(ccm.core.watch._Inotify, "add", full)
    route_file = tmp_path / "routes.ccm"
    route_file.write_text("v1")
    async with watching(tmp_path) as watched:
        await anyio.sleep(2 * ccm.core.watch.POLL_MS / 1000)  # the poller's first look is its baseline
        route_file.write_text("v2, a little longer")
        await eventually(lambda: bool(watched.bursts), what="a burst")
        assert watched.bursts == [{str(route_file)}]
