"""Instructions per request, counted by valgrind's callgrind: the one figure that does not move with the neighbours'
load on these shared 2-core machines, so that a change of a few percent is seen in one run of a few seconds.

    .venv/bin/python -m bench.instructions                           # the checkout as it is: tiny and real request
    .venv/bin/python -m bench.instructions --rev 04f803c --variant 'off=--no-ledger --no-metrics' --variant defaults=
    .venv/bin/python -m bench.instructions --rev 8668c8f --rev 1ad3d22 --request tiny
    .venv/bin/python -m bench.instructions --rev 04f803c --rev '7a2ed76=--no-ledger --no-metrics' --request tiny
    .venv/bin/python -m bench.instructions --variant noledger=--no-ledger --variant on= --keep /tmp/cg  # profiles

`--rev REV[=ARGS]` (repeatable) runs that revision's `ccm run` with the route file, port and ARGS; `--variant
NAME=ARGS` (repeatable) the checkout with these arguments. Ratios are to the first.

Each revision's `ccm run` (from a worktree and venv of its own, as `make bench` variants are: bench.variants) serves
the bench route file under callgrind with instrumentation off; after `--warm` requests the harness turns it on
(`callgrind_control -i on`), sends `--requests` requests on one keep-alive connection, dumps the counts and turns
it off. Reported per request: the main thread's instructions (the event loop: what a request waits for) and every
thread's (the ledger's SQLite writer too). The upstream is the harness's own asyncio server (bench.upstream), in
this process, so its work is not counted.

What it does not see: time spent waiting (syscalls, the network), and how instructions become time (caches, the
other core). It ranks changes to ccm's own code; `make bench` says what they cost in milliseconds. Under valgrind a
request takes ~50 times longer, so per-batch work (the ledger journal's transactions) is spread over fewer
requests than at full speed: `--linger S` lets the journal gather about as many rows per batch as it would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.targets import REPO, TINY, ccm_routes, free_port
from bench.upstream import serve_python
from bench.variants import prepare_tree
from bench.workloads import REAL_REQUEST, Plan, encode, fixture_bodies

STARTUP_S = 120.0  # ccm's start under valgrind (instrumentation off) takes a few seconds; a slow machine more
SUMMARY = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Counted:
    name: str
    request: str
    main: float  # instructions per request on the main thread
    every: float  # on every thread


def body_of(request: str) -> bytes:
    if request == "tiny":
        return TINY
    return encode(fixture_bodies(Plan(fixtures=(REAL_REQUEST,)))[Path(REAL_REQUEST).stem])


@contextmanager
def upstream() -> Iterator[str]:
    """bench.upstream's asyncio server on a thread of this process; yields its base URL."""
    ready: list[str] = []
    stop = threading.Event()

    async def serve() -> None:
        async with serve_python() as url:
            ready.append(url)
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    while not ready:
        time.sleep(0.01)
    try:
        yield ready[0]
    finally:
        stop.set()
        thread.join()


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs a body and reads the whole answer (Content-Length)."""

    def __init__(self, port: int, body: bytes) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port))
        self.request = (f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
                        f"anthropic-version: 2023-06-01\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body

    def post(self) -> None:
        self.socket.sendall(self.request)
        data = b""
        while (end := data.find(b"\r\n\r\n")) < 0:
            data += self._read()
        head = data[:end].lower()
        if not head.startswith(b"http/1.1 200"):
            raise RuntimeError(f"ccm answered {head[:200]!r}")
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(data) < end + 4 + length:
            data += self._read()

    def _read(self) -> bytes:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise RuntimeError("ccm closed the connection")
        return chunk

    def close(self) -> None:
        self.socket.close()


def count(python: Path, name: str, request: str, args: Sequence[str], requests: int, warm: int,
          linger: float | None, base_url: str, keep: Path | None = None) -> Counted:
    with tempfile.TemporaryDirectory(prefix="ccm-instructions-") as folder:
        work = Path(folder)
        routes = work / "routes" / "routes.ccm"
        routes.parent.mkdir()
        routes.write_text(ccm_routes(base_url))
        port = free_port()
        # (revisions before the journal have no linger to set; `ccm.cli.entry` since the lifecycle commands)
        lingers = ("try:\n    import ccm.ledger.journal as j\n"
                   f"    j.LINGER_S = {linger}\nexcept ImportError:\n    pass\n" if linger is not None else "")
        start = ("import sys\nsys.argv = ['ccm', *sys.argv[1:]]\n" + lingers
                 + "try:\n    from ccm.cli.entry import main\nexcept ImportError:\n    from ccm.cli.main import main\n"
                 "main()")
        out = work / "callgrind.out"
        environ = {**os.environ, "PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0", "XDG_DATA_HOME": str(work / "data"),
                   "HOME": str(work)}
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                   f"--callgrind-out-file={out}", str(python), "-c", start, "run", str(routes), "--port", str(port),
                   *args]
        with open(work / "ccm.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=work)
        try:
            connection = _connected(port, body_of(request), process, work)
            for _ in range(warm):
                connection.post()
            _control(process.pid, "-i", "on")
            for _ in range(requests):
                connection.post()
            _control(process.pid, "-d")
            _control(process.pid, "-i", "off")
            connection.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
        dumps = sorted(work.glob("callgrind.out.*-*"))
        per_thread = [int(found.group(1)) for path in dumps if (found := SUMMARY.search(path.read_text()))]
        if keep is not None:  # for callgrind_annotate: <keep>/<name>-<request>.<thread>
            keep.mkdir(parents=True, exist_ok=True)
            for path in dumps:
                shutil.copy(path, keep / f"{name}-{request}.{path.name.rsplit('-', 1)[1]}")
        if not per_thread:
            raise RuntimeError(f"callgrind wrote no counts ({(work / 'ccm.log').read_text()[-2000:]})")
        return Counted(name, request, per_thread[0] / requests, sum(per_thread) / requests)


def _connected(port: int, body: bytes, process: subprocess.Popen[bytes], work: Path) -> Connection:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ccm exited: {(work / 'ccm.log').read_text()[-2000:]}")
        try:
            return Connection(port, body)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"ccm did not listen on {port} within {STARTUP_S:g} s")


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", default=[],
                        help="REV[=ARGS]: a revision, run with these `ccm run` arguments or none (repeatable)")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=ARGS: the checkout with these `ccm run` arguments (repeatable)")
    parser.add_argument("--request", choices=("tiny", "real", "both"), default="both")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--linger", type=float, default=5.0,
                        help="the ledger journal's linger under valgrind, so batches hold about as many rows as at "
                             "full speed (0: ccm's own)")
    parser.add_argument("--keep", type=Path, help="copy each run's callgrind files into this folder, one per thread "
                                                  "(NAME-REQUEST.01 is the main thread): callgrind_annotate reads them")
    options = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench.instructions needs valgrind (apt-get install valgrind; bench/setup.sh installs it)")
    checkout = REPO / ".venv" / "bin" / "python"
    runs: list[tuple[str, Path, list[str]]] = []
    for spec in options.rev:
        rev, _, words = spec.partition("=")
        tree = prepare_tree(rev)
        runs.append((tree.short, tree.python, words.split()))
    for variant in options.variant:
        name, _, words = variant.partition("=")
        runs.append((name, checkout, words.split()))
    if not runs:
        runs.append(("checkout", checkout, []))
    requests = ("tiny", "real") if options.request == "both" else (options.request,)
    linger = options.linger or None
    print(f"{'':12} {'request':8} {'main thread':>14} {'all threads':>14}   (instructions per request)")
    with upstream() as base_url:
        for request in requests:
            first: Counted | None = None
            for name, python, args in runs:
                counted = count(python, name, request, args, options.requests, options.warm, linger, base_url,
                                options.keep)
                first = first or counted
                ratio = counted.main / first.main
                print(f"{name:12} {request:8} {counted.main / 1000:>12,.0f}k {counted.every / 1000:>12,.0f}k   "
                      f"{ratio:.3f}× main of {first.name}", flush=True)


if __name__ == "__main__":
    main()
