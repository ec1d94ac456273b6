"""Paced streams: what ccm adds to each stream event when the upstream sends its events one at a time.

The main run's upstream (nginx) hands a 200-chunk stream over in one write, so each read carries many events and the
per-event cost of waking the loop, passing the transport, translating and writing hides behind the burst. Here a
small asyncio upstream in this process writes each of the 200 OpenAI stream chunks on its own, `--gap` apart, and
`ccm run` (the tree's code, from the repo venv) relays them. Two figures:

- **added per event** (issue 7's "streaming adds ≤ 0.1 ms per chunk"): the upstream, a process of its own, writes
  the monotonic clock's reading into each text event as it sends it (`"content":"<ns>:"`); a raw client in this
  process reads it back on arrival, through ccm (in its `text_delta`) and straight from the upstream. The median
  delay through ccm minus the median delay straight is what ccm adds: one more hop between processes, and ccm.
  For scale, the same through a byte-for-byte relay (a process that copies the sockets' bytes, on uvloop, and does
  nothing else): the floor for anything that sits in the path, on this machine.
- **CPU per event**: ccm's own CPU time (user + system, from /proc) over the streams, divided by the events relayed;
  on this machine most of it is the kernel's: a wake-up from idle and a socket read and write per event.

    .venv/bin/python -m bench.paced [--streams 10] [--gap 0.001] [--rounds 3] [--against OLD_TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

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
STAMP = re.compile(rb'"(?:content|text)":"(\d+):')  # a text event's send time, as the upstream wrote it


async def serve_paced(gap: float, port: int) -> asyncio.base_events.Server:
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
                    event = event.replace(b'"content":"tok', b'"content":"%d:' % time.perf_counter_ns(), 1)
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(gap)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


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


async def delays(port: int, path: str, streams: int) -> list[float]:
    """Seconds from the upstream's write of each text event to its arrival here, over `streams` streams, each
    POSTed on a fresh connection; a read's stamp applies to every event that ends in it."""
    found: list[float] = []
    for _ in range(streams):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (path.encode(), len(BODY), BODY))
        data, reads = b"", []  # (where the read ended, when it arrived)
        try:
            while not data.endswith(b"0\r\n\r\n"):  # the end of the chunked answer (the upstream keeps the socket)
                piece = await asyncio.wait_for(reader.read(65536), 30)
                if not piece:
                    break
                data += piece
                reads.append((len(data), time.perf_counter_ns()))
        finally:
            writer.close()
        ends = [end for end, _ in reads]
        for match in STAMP.finditer(data):
            arrived = reads[bisect.bisect_left(ends, match.end())][1]
            found.append((arrived - int(match.group(1))) / 1e9)
    return found


async def start_helper(*arguments: str) -> tuple[subprocess.Popen[bytes], int]:
    """This module in a process of its own (the paced upstream, or the relay), once it accepts connections: a
    client straight to the upstream crosses one process boundary, as a client of ccm's upstream does."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.paced", *arguments, "--port", str(port)],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return process, port
        except OSError:
            await asyncio.sleep(0.025)
    process.kill()
    raise RuntimeError(f"bench.paced {' '.join(arguments)} did not start")


async def measure(streams: int, gap: float, source: Path | None = None) -> dict[str, float]:
    """One round: ccm's CPU per event (µs) over `streams` streams, and the median delay per event (µs) through
    ccm, through the relay and straight from the upstream over as many."""
    upstream, upstream_port = await start_helper("--serve", "--gap", str(gap))
    relay, relay_port = await start_helper("--relay-to", str(upstream_port))
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        routes = Path(workdir) / "routes.ccm"
        routes.write_text(TABLE.format(port=upstream_port))
        # its ledger in the round's folder: never the user's own database (nor one an older ccm left at another
        # schema version, which would stop this one from starting)
        ccm = subprocess.Popen([*ccm_command(source), "run", str(routes), "--port", str(port),
                                "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "XDG_DATA_HOME": workdir})
        try:
            url = f"http://127.0.0.1:{port}/v1/messages"
            for _ in range(100):
                try:
                    await loadgen.fetch(url, BODY, {"content-type": "application/json"}, timeout=5)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            before = cpu_seconds(ccm.pid)
            for _ in range(streams):
                await loadgen.fetch(url, BODY, {"content-type": "application/json"}, timeout=30)
            figures = {"cpu_us": (cpu_seconds(ccm.pid) - before) / (streams * STREAM_CHUNKS) * 1e6}
            for key, at, path in (("through_us", port, "/v1/messages"),
                                  ("straight_us", upstream_port, "/v1/chat/completions"),
                                  ("relay_us", relay_port, "/v1/chat/completions")):
                figures[key] = statistics.median(await delays(at, path, streams)) * 1e6
            return figures
        finally:
            ccm.terminate()
            ccm.wait(10)
            for helper in (upstream, relay):
                helper.terminate()
                helper.wait(10)


async def serve_forever(port: int, gap: float) -> None:
    server = await serve_paced(gap, port)
    async with server:
        await server.serve_forever()


async def relay_forever(port: int, upstream_port: int) -> None:
    """Copy bytes both ways between each client and a connection of its own to the upstream, as they arrive."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def summary_line(name: str, found: dict[str, list[float]]) -> str:
    """One tree's figures over its rounds, as `make bench` reads them back (`parse_summary`)."""
    added = [through - straight for through, straight in zip(found["through_us"], found["straight_us"], strict=True)]
    relayed = [relay - straight for relay, straight in zip(found["relay_us"], found["straight_us"], strict=True)]
    return (f"{name}: ccm adds {statistics.median(added):.0f} µs per paced event (delay per event "
            f"through ccm {statistics.median(found['through_us']):.0f} µs, straight from the upstream "
            f"{statistics.median(found['straight_us']):.0f} µs; rounds: {', '.join(f'{a:.0f}' for a in added)}); "
            f"a byte-for-byte relay adds {statistics.median(relayed):.0f} µs; "
            f"ccm CPU per paced event: median {statistics.median(found['cpu_us']):.0f} µs "
            f"(rounds: {', '.join(f'{f:.0f}' for f in found['cpu_us'])})")


def parse_summary(text: str) -> dict[str, float]:
    """The figures of the last `summary_line` in `text`: added_us, relay_us, median_us (CPU per event)."""
    patterns = {"added_us": r"ccm adds (-?[\d.]+) µs", "relay_us": r"relay adds (-?[\d.]+) µs",
                "median_us": r"CPU per paced event: median ([\d.]+) µs"}
    found = {}
    for key, pattern in patterns.items():
        matches = re.findall(pattern, text)
        if matches:
            found[key] = float(matches[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10, help="streams per round (sequential)")
    parser.add_argument("--gap", type=float, default=0.001, help="seconds between two upstream events")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="also measure the ccm package of this source tree, alternating")
    # the helpers' own processes
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--relay-to", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        asyncio.run(serve_forever(options.port, options.gap))
        return
    if options.relay_to:
        uvloop.run(relay_forever(options.port, options.relay_to))
        return
    started = time.perf_counter()
    sources: list[Path | None] = [None] if options.against is None else [options.against, None]
    figures: dict[Path | None, dict[str, list[float]]] = {}
    for _ in range(options.rounds):
        for source in sources:
            for key, value in asyncio.run(measure(options.streams, options.gap, source)).items():
                figures.setdefault(source, {}).setdefault(key, []).append(value)
    for source, found in figures.items():
        print(summary_line(str(source or "this tree"), found))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
