"""`ccm check` on generated route files of growing size: seconds and peak RSS, each in a fresh process.

    python -m bench.bench_check_size [MEGABYTES …]     (default: 1 4 10)

By hand, not part of `make bench`: it shows that the compiler's time and memory grow linearly with the file (issue
12, item 12; before, 12,000 statements took 650 MB and a 4 MB file went past 24 GB). The file is the shape of
tests/lang/test_performance.py's, repeated: providers, models, rules of every condition kind, fallbacks, tests.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lang.test_performance import generate

CHECK = "from ccm.cli.main import main; main()"


def measure(megabytes: float, folder: Path) -> tuple[int, float, float]:
    rules = max(1, int(megabytes * 1e6 * 2000 / len(generate(2000))))
    path = folder / f"{megabytes:g}mb.ccm"
    path.write_text(generate(rules))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHECK, "check", str(path)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-2000:])
    # RUSAGE_CHILDREN is the largest child so far: sizes run in increasing order, so it is this one's
    return path.stat().st_size, seconds, max(rss, before) / 1024


def main() -> None:
    sizes = [float(a) for a in sys.argv[1:]] or [1.0, 4.0, 10.0]
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in sorted(sizes):
            size, seconds, rss = measure(megabytes, Path(tmp))
            print(f"ccm check, {size / 1e6:5.1f} MB: {seconds:6.1f} s, peak RSS {rss:6.0f} MB "
                  f"({rss / (size / 1e6):.0f} MB per MB of file)")


if __name__ == "__main__":
    main()
