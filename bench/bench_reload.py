"""Save-to-live time of hot reload: from the moment a route file's write returns to the first request answered by
the new table, through a real server (hypercorn on 127.0.0.1) against a loopback upstream.

Run: .venv/bin/python bench/bench_reload.py [SAVES]   (not run in CI; target: median under 100 ms)

A client asks continuously (one request at a time) while the file is rewritten; each version routes to its own
upstream model, which the upstream echoes, so the first answer naming the new model marks the end of the reload.
The reload's own share (compile + in-file tests + runtime build + swap) is read from its log line; the rest is the
watcher's debounce and the request that observes the change.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes import FakeAnthropic, Reply, serve  # noqa: E402
from tests.reload.conftest import UPSTREAM_KEY, routes, serve_routes, write  # noqa: E402

RELOAD_LINE = re.compile(r" in (\d+) ms: ")


class ReloadTimes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ms: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = RELOAD_LINE.search(record.getMessage())
        if found:
            self.ms.append(float(found.group(1)))


async def measure(saves: int) -> tuple[list[float], list[float]]:
    reload_log = ReloadTimes()
    logger = logging.getLogger("ccm.reload")
    logger.addHandler(reload_log)
    logger.setLevel(logging.INFO)
    with (
        serve(FakeAnthropic(UPSTREAM_KEY, default=Reply(text="ok"))) as (url, _),
        tempfile.TemporaryDirectory() as folder,
    ):
        route_file = Path(folder) / "routes.ccm"
        route_file.write_text(routes(0))
        environ = {"UPSTREAM_URL": url, "UPSTREAM_KEY": UPSTREAM_KEY}
        async with serve_routes(route_file, environ) as served:
            for _ in range(20):  # warm the connections and the code paths
                await served.ask()
            live: list[float] = []
            for version in range(1, saves + 1):
                wanted = f"model-v{version}"
                started = time.perf_counter()
                write(route_file, routes(version))
                while (await served.ask()).json()["model"] != wanted:
                    pass
                live.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.05)  # let the watcher go idle, as between two real saves
    return live, reload_log.ms


def main() -> None:
    saves = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    live, reload_ms = asyncio.run(measure(saves))
    print(f"save-to-live over {saves} saves: median {statistics.median(live):.1f} ms, "
          f"p90 {statistics.quantiles(live, n=10)[-1]:.1f} ms, min {min(live):.1f} ms, max {max(live):.1f} ms")
    print("of which the reload itself (compile, in-file tests, runtime, swap): "
          f"median {statistics.median(reload_ms):.0f} ms")


if __name__ == "__main__":
    main()
