"""How long select_route takes on the real Claude Code requests (no token rule fires). Run by hand:
`.venv/bin/python bench/bench_route.py`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ccm.route import select_route  # noqa: E402
from tests.conftest import fixture_names, load_fixture  # noqa: E402
from tests.test_route import SCENARIOS  # noqa: E402


def main() -> None:
    for name in fixture_names():
        request = load_fixture(name)["body"]
        select_route(SCENARIOS, request, count_tokens=lambda _: 10)
        runs = 20_000
        start = time.perf_counter()
        for _ in range(runs):
            select_route(SCENARIOS, request, count_tokens=lambda _: 10)
        print(f"{name:34s} {(time.perf_counter() - start) / runs * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
