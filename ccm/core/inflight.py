"""Requests in flight, counted per reload epoch, so what a reload retired is closed only when nothing can use it.

Each HTTP request is counted under the epoch current when it arrived (`enter`/`leave`, by the API app). A reload
swaps the runtime and calls `advance()` in the same event-loop step, so every request that arrives afterwards reads
the new runtime: only requests of earlier epochs can hold an older one, and `wait_drained(epoch)` returns once
they are done.
"""

from __future__ import annotations

import anyio


class InFlight:
    def __init__(self) -> None:
        self._epoch = 0
        self._active: dict[int, int] = {}  # epoch -> requests still running; epochs with none are removed
        self._progress: anyio.Event | None = None  # made inside the event loop, when a drain first waits

    def enter(self) -> int:
        epoch = self._epoch
        self._active[epoch] = self._active.get(epoch, 0) + 1
        return epoch

    def leave(self, epoch: int) -> None:
        left = self._active[epoch] - 1
        if left:
            self._active[epoch] = left
            return
        del self._active[epoch]
        if epoch != self._epoch and self._progress is not None:  # the last of a retired epoch: wake the drains
            self._progress.set()
            self._progress = None

    def advance(self) -> int:
        """Start a new epoch; returns the one that ended (requests up to it may use the previous runtime)."""
        ended, self._epoch = self._epoch, self._epoch + 1
        return ended

    def running(self, up_to: int) -> int:
        return sum(count for epoch, count in self._active.items() if epoch <= up_to)

    async def wait_drained(self, up_to: int) -> None:
        while self.running(up_to):
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()
