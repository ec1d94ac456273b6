"""Paced streams: ccm's CPU per stream event when the upstream sends its events one at a time.

The main run's upstream (nginx) hands a 200-chunk stream over in one write, so each read carries many events and the
per-event cost of waking the loop, passing the transport, translating and writing hides behind the burst. Here a
small asyncio upstream in this process writes each of the 200 OpenAI stream chunks on its own, `--gap` apart; `ccm
run` (the tree's code, from the repo venv) relays them to a client reading the stream, and the figure is ccm's own
CPU time (user + system, from /proc) over the streams, divided by the events relayed. Issue 7's target is ≤ 100 µs.

    .venv/bin/python -m bench.paced [--streams 10] [--gap 0.001] [--rounds 3] [--against OLD_TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import loadgen
from bench.targets import free_port
from bench.upstream import STREAM_CHUNKS, openai_stream

REPO = Path(__file__).resolve().parent.parent
EVENTS = [event + b"\n\n" for event in openai_stream().split(b"\n\n") if event]
TABLE = """provider paced {{
  type openai
  url  "http://127.0.0.1:{port}/v1"
  key  "bench"
}}
model gpt = paced/gpt-bench
route {{
  default -> gpt
}}
"""
BODY = b'{"model":"gpt","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}'


async def serve_paced(gap: float) -> tuple[asyncio.base_events.Server, int]:
    """An HTTP/1.1 upstream answering every request with the stream, one chunked write per event, `gap` apart."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                for event in EVENTS:
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(gap)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ccm_command(source: Path | None) -> list[str]:
    """`ccm` from the repo venv; with `source`, the ccm package of that tree instead (e.g. `git archive` of an older
    commit), for a before/after in one run. The venv's editable install would win over PYTHONPATH: it is dropped."""
    if source is None:
        return [str(Path(sys.executable).parent / "ccm")]
    boot = (f"import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
            f"sys.path.insert(0, {str(source)!r}); from ccm.cli.main import main; sys.argv[0] = 'ccm'; main()")
    return [sys.executable, "-c", boot]


async def measure(streams: int, gap: float, rounds: int, source: Path | None = None) -> list[float]:
    server, upstream_port = await serve_paced(gap)
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        routes = Path(workdir) / "routes.ccm"
        routes.write_text(TABLE.format(port=upstream_port))
        ccm = subprocess.Popen([*ccm_command(source), "run", str(routes), "--port", str(port), "--log-level", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/v1/messages"
            for _ in range(100):
                try:
                    await loadgen.fetch(url, BODY, {"content-type": "application/json"}, timeout=5)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            per_event = []
            for _ in range(rounds):
                before = cpu_seconds(ccm.pid)
                for _ in range(streams):
                    await loadgen.fetch(url, BODY, {"content-type": "application/json"}, timeout=30)
                per_event.append((cpu_seconds(ccm.pid) - before) / (streams * STREAM_CHUNKS) * 1e6)
            return per_event
        finally:
            ccm.terminate()
            ccm.wait(10)
            server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10, help="streams per round (sequential)")
    parser.add_argument("--gap", type=float, default=0.001, help="seconds between two upstream events")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="also measure the ccm package of this source tree, alternating")
    options = parser.parse_args()
    started = time.perf_counter()
    sources: list[Path | None] = [None] if options.against is None else [options.against, None]
    figures: dict[Path | None, list[float]] = {source: [] for source in sources}
    for _ in range(options.rounds):
        for source in sources:
            figures[source] += asyncio.run(measure(options.streams, options.gap, 1, source))
    for source, values in figures.items():
        print(f"{source or 'this tree'}: ccm CPU per paced event: median {statistics.median(values):.0f} µs "
              f"(rounds: {', '.join(f'{f:.0f}' for f in values)})")
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
