"""What `/metrics` costs a request: the record subscriber (`Metrics.observe`), timed per call on records shaped
like real traffic (a non-streamed answer, a stream with cache reads, a retried request that fell back, a refused
one). It runs on the request's task after the answer was sent. Run by hand: `.venv/bin/python bench/bench_metrics.py`
(`--multiprocess` times prometheus_client's memory-mapped values, as under `ccm run --workers N`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNS = 20_000
ROUNDS = 7


def main() -> None:
    if "--multiprocess" in sys.argv:  # before prometheus_client is imported: it picks its storage then
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ccm-bench-metrics-")
    from ccm.metrics import Metrics
    from tests.test_metrics import RECORDS, runtime_holder

    holder = runtime_holder()
    metrics = Metrics(holder, multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    for name, record in RECORDS.items():
        for _ in range(1000):
            metrics.observe(record)
        rounds = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(RUNS):
                metrics.observe(record)
            rounds.append((time.perf_counter() - start) / RUNS * 1e6)
        print(f"{name:28s} median {statistics.median(rounds):6.2f} µs per record (min {min(rounds):.2f})")

    async def scrape() -> tuple[bytes, float]:
        start = time.perf_counter()
        body = await metrics.exposition()
        return body, time.perf_counter() - start

    body, took = asyncio.run(scrape())
    print(f"{'scrape':28s} {took * 1e3:6.2f} ms ({len(body)} bytes)")


if __name__ == "__main__":
    main()
