"""The workloads, each run against one started target (a router, or the upstream alone where it applies).

    tiny         a 90-byte Anthropic request, 1 connection                      (router: translated to OpenAI)
    fixtures     each captured Claude Code request, 1 connection, stream off   (translated to OpenAI)
    passthrough  the same requests to the Anthropic upstream                    (the peers' passthrough)
    stream       200-chunk and short streams, OpenAI (translated) and Anthropic flavours: time to the first body
                 byte and to the last
    burst        the 26 count_tokens requests of one `/context`, all at once: wall time
    sweep        the real 50 KB request at 1, 8, 32, 128 connections: req/s, p50, p99
    memory       RSS of the process tree before and while 256 slow streams are open (idle: bench.run, after start)

Each returns a JSON-ready dict; a failure inside one workload is recorded as {"error": "..."} and the run goes on.
Latencies are in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen, wrk
from bench.targets import (
    ANTHROPIC,
    ANTHROPIC_STREAM,
    ANTHROPIC_STREAM_SHORT,
    CLIENT_HEADERS,
    DEFAULT,
    OPENAI_SLOW,
    OPENAI_STREAM,
    OPENAI_STREAM_SHORT,
    TINY,
    Route,
    Target,
    Upstream,
)
from bench.upstream import SHORT_CHUNKS, STREAM_CHUNKS
from tests.conftest import FIXTURES

REAL_REQUEST = "bash-tool-result-turn2.json"
WORKLOADS = ("tiny", "fixtures", "passthrough", "stream", "burst", "sweep", "memory")
COUNT_TOKENS_PATH = "/anthropic/v1/messages/count_tokens"  # what the upstream alone answers for the burst


@dataclass(frozen=True)
class Plan:
    """How long and how hard: the full run's defaults; the smoke test shrinks everything."""

    seconds: float = 3.0  # the tiny request, and each level of the sweep
    fixture_seconds: float = 2.0  # each fixture, translated and passed through
    stream_seconds: float = 2.0  # each stream flavour (sequential requests)
    burst_rounds: int = 10
    streams: int = 256
    connections: tuple[int, ...] = (1, 8, 32, 128)
    fixtures: tuple[str, ...] | None = None  # None: every /v1/messages fixture
    use_wrk: bool = field(default_factory=wrk.available)


def fixture_bodies(plan: Plan) -> dict[str, dict[str, Any]]:
    """name -> request body (stream off: the canned upstream answers JSON) for every /v1/messages fixture."""
    bodies = {}
    for path in sorted(FIXTURES.glob("*.json")):
        if plan.fixtures is not None and path.name not in plan.fixtures:
            continue
        capture = json.loads(path.read_bytes())
        if capture["path"].split("?")[0] != "/v1/messages":
            continue
        bodies[path.stem] = {**capture["body"], "stream": False}
    return bodies


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def with_model(raw: bytes, model: str, stream: bool = False) -> bytes:
    body = json.loads(raw)
    body["model"] = model
    body["stream"] = stream
    return encode(body)


def url_for(target: Target, route: Route | None) -> str:
    """Where a request on `route` goes: the router's own endpoint, or for the upstream alone the path the router
    would end at. `None` is count_tokens."""
    if isinstance(target, Upstream):
        return target.base_url + (route.endpoint if route else COUNT_TOKENS_PATH)
    return target.base_url + ("/v1/messages" if route else "/v1/messages/count_tokens")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def latency(url: str, body: bytes, connections: int, seconds: float, plan: Plan) -> dict[str, Any]:
    """p50/p90/p99 (ms), req/s and errors for `connections` keep-alive connections POSTing `body`."""
    if plan.use_wrk:
        return (await asyncio.to_thread(wrk.run, url, body, connections, seconds, CLIENT_HEADERS)).as_dict()
    result = await loadgen.load(url, body, connections, seconds, CLIENT_HEADERS)
    ms = [value * 1000 for value in result.latencies_s]
    measured: dict[str, Any] = {"p50_ms": round(percentile(ms, 0.5), 3), "p90_ms": round(percentile(ms, 0.9), 3),
                                "p99_ms": round(percentile(ms, 0.99), 3), "rps": round(result.rps, 1),
                                "requests": len(ms) + result.errors, "errors": result.errors}
    if result.first_error:
        measured["first_error"] = result.first_error
    return measured


async def warm(url: str, body: bytes, count: int = 3) -> None:
    """A few unmeasured requests, so the first-request costs (connections, caches) stay out of the figures; a
    failure here is the workload's error."""
    for _ in range(count):
        answer = await loadgen.fetch(url, body, CLIENT_HEADERS)
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {answer.body[:300].decode(errors='replace')}")


async def guarded(run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    try:
        return await run()
    except Exception as error:  # one workload's failure is a result to report, not the end of the run
        return {"error": f"{type(error).__name__}: {error}"[:500]}


async def tiny(target: Target, plan: Plan) -> dict[str, Any]:
    url = url_for(target, DEFAULT)
    await warm(url, TINY)
    return await latency(url, TINY, 1, plan.seconds, plan)


async def fixtures(target: Target, plan: Plan, passthrough: bool = False) -> dict[str, Any]:
    results = {}
    url = url_for(target, ANTHROPIC if passthrough else DEFAULT)
    for name, body in fixture_bodies(plan).items():
        raw = encode({**body, "model": ANTHROPIC.model}) if passthrough else encode(body)

        async def one(raw: bytes = raw) -> dict[str, Any]:
            await warm(url, raw)
            return await latency(url, raw, 1, plan.fixture_seconds, plan)

        results[name] = {"bytes": len(raw), **await guarded(one)}
    return results


STREAM_ROUNDS = 4  # the long and the short stream alternate in this many windows: a noisy second hits both alike


async def stream(target: Target, plan: Plan) -> dict[str, Any]:
    """Per flavour, the 200-chunk stream and the short one, each on one connection, in alternating windows. The
    short one gives the cost per stream (its first byte is the first-byte figure); the difference between the two,
    the cost per chunk — even when the router writes nothing until it has translated a whole burst of chunks."""
    results: dict[str, Any] = {}
    for flavour, full, short in (("openai", OPENAI_STREAM, OPENAI_STREAM_SHORT),
                                 ("anthropic", ANTHROPIC_STREAM, ANTHROPIC_STREAM_SHORT)):
        async def one(full: Route = full, short: Route = short, flavour: str = flavour) -> dict[str, Any]:
            shapes = {"": full, "short_": short}
            samples: dict[str, tuple[list[float], list[float]]] = {prefix: ([], []) for prefix in shapes}
            for prefix, route in shapes.items():
                await warm(url_for(target, route), with_model(TINY, route.model, stream=True))
            for _ in range(STREAM_ROUNDS):
                for prefix, route in shapes.items():
                    first, total = samples[prefix]
                    await stream_timings(url_for(target, route), with_model(TINY, route.model, stream=True),
                                         plan.stream_seconds / STREAM_ROUNDS, first, total)
            figures: dict[str, Any] = {"chunks": STREAM_CHUNKS, "short_chunks": SHORT_CHUNKS[flavour]}
            for prefix, (first, total) in samples.items():
                figures |= {f"{prefix}first_byte_p50_ms": round(statistics.median(first), 3),
                            f"{prefix}total_p50_ms": round(statistics.median(total), 3),
                            f"{prefix}samples": len(total)}
            return figures

        results[flavour] = await guarded(one)
    return results


async def stream_timings(url: str, body: bytes, seconds: float, first: list[float], total: list[float]) -> None:
    """Sequential streams on one keep-alive connection for `seconds`: the time to each one's first body byte and
    to its last, in ms, appended to `first` and `total`."""
    connection = loadgen.Connection(*_host_port(url))
    raw = loadgen.request_bytes(url, body, CLIENT_HEADERS)
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline and len(total) < 2000:
            answer = await asyncio.wait_for(connection.exchange(raw), 30)
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {answer.body[:300].decode(errors='replace')}")
            first.append(answer.first_byte_s * 1000)
            total.append(answer.total_s * 1000)
    finally:
        await connection.close()


async def burst(target: Target, plan: Plan) -> dict[str, Any]:
    from bench.bench_tokens import context_burst  # the /context burst as bench_tokens builds it

    bodies = context_burst()
    url = url_for(target, None)
    walls = []
    for _ in range(plan.burst_rounds):
        wall, answers = await loadgen.burst(url, bodies, CLIENT_HEADERS)
        failed = [answer for answer in answers if answer.status != 200]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(answers)} answers failed, first: HTTP {failed[0].status} "
                               f"{failed[0].body[:300].decode(errors='replace')}")
        walls.append(wall * 1000)
    return {"requests": len(bodies), "first_ms": round(walls[0], 3), "median_ms": round(statistics.median(walls), 3),
            "min_ms": round(min(walls), 3), "rounds": len(walls)}


async def sweep(target: Target, plan: Plan) -> dict[str, Any]:
    body = encode(fixture_bodies(Plan(fixtures=(REAL_REQUEST,)))[Path(REAL_REQUEST).stem])
    url = url_for(target, DEFAULT)
    await warm(url, body)
    results = {}
    for connections in plan.connections:
        results[str(connections)] = await guarded(lambda c=connections: latency(url, body, c, plan.seconds, plan))
    return results


async def memory(target: Target, plan: Plan) -> dict[str, Any]:
    """Peak RSS while `plan.streams` slow streams (each ~4 s at the upstream's pace) are open at once."""
    url = url_for(target, OPENAI_SLOW)
    body = with_model(TINY, OPENAI_SLOW.model, stream=True)
    before = target.rss_mb()
    peak = before
    tasks = [asyncio.create_task(loadgen.fetch(url, body, CLIENT_HEADERS, timeout=60)) for _ in range(plan.streams)]
    started = time.perf_counter()
    while not all(task.done() for task in tasks) and time.perf_counter() - started < 70:
        peak = max(peak, target.rss_mb())
        await asyncio.sleep(0.1)
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    completed = sum(1 for answer in answers if isinstance(answer, loadgen.Answer) and answer.status == 200)
    return {"before_mb": round(before, 1), "streams": plan.streams, "peak_mb": round(peak, 1), "completed": completed,
            "seconds": round(time.perf_counter() - started, 2)}


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def run_all(target: Target, names: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """The selected workloads against a started target, in the order of WORKLOADS. The upstream alone skips the
    workloads where it has nothing to compare (memory under streams)."""
    steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "tiny": lambda: tiny(target, plan),
        "fixtures": lambda: fixtures(target, plan),
        "passthrough": lambda: fixtures(target, plan, passthrough=True),
        "stream": lambda: stream(target, plan),
        "burst": lambda: burst(target, plan),
        "sweep": lambda: sweep(target, plan),
        "memory": lambda: memory(target, plan),
    }
    results = {}
    for name in WORKLOADS:
        if name in names and not (isinstance(target, Upstream) and name == "memory"):
            started = time.perf_counter()
            results[name] = await guarded(steps[name])
            took = time.perf_counter() - started
            print(f"  {target.name:8s} {name:12s} {took:6.1f} s  {summary(name, results[name])}", flush=True)
    return results


def summary(name: str, result: dict[str, Any]) -> str:
    """One line for the console while the run goes."""
    if "error" in result:
        return f"error: {result['error'][:160]}"
    if name == "tiny":
        return f"p50 {result['p50_ms']:.3f} ms, {result['rps']:.0f} req/s"
    if name in ("fixtures", "passthrough"):
        p50s = [entry["p50_ms"] for entry in result.values() if "p50_ms" in entry]
        failed = sum(1 for entry in result.values() if "error" in entry)
        return f"p50 {min(p50s, default=float('nan')):.3f}..{max(p50s, default=float('nan')):.3f} ms" + \
            (f", {failed} failed" if failed else "")
    if name == "stream":
        return ", ".join(f"{flavour}: " + (f"short {entry['short_first_byte_p50_ms']:.2f}/"
                                           f"{entry['short_total_p50_ms']:.2f} ms, {entry['chunks']} chunks "
                                           f"{entry['first_byte_p50_ms']:.2f}/{entry['total_p50_ms']:.2f} ms"
                                           if "error" not in entry else "error")
                         for flavour, entry in result.items())
    if name == "burst":
        return f"26 at once: median {result['median_ms']:.1f} ms (first {result['first_ms']:.1f} ms)"
    if name == "sweep":
        return ", ".join(f"{level}: {entry['rps']:.0f} req/s" if "rps" in entry else f"{level}: error"
                         for level, entry in result.items())
    if name == "memory":
        return f"before {result['before_mb']:.0f} MB, {result['streams']} streams {result['peak_mb']:.0f} MB " \
               f"({result['completed']} completed)"
    return ""
