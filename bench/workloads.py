"""The workloads, each run against one started target (a router, or the upstream alone where it applies).

    tiny         a 90-byte Anthropic request, 1 connection                      (router: translated to OpenAI)
    fixtures     each captured Claude Code request, 1 connection, stream off   (translated to OpenAI)
    passthrough  the same requests to the Anthropic upstream                    (the peers' passthrough)
    stream       200-chunk and short streams, OpenAI (translated) and Anthropic flavours: time to the first body
                 byte and to the last
    burst        the 26 count_tokens requests of one `/context`, all at once: wall time
    sweep        the real 50 KB request at 1, 8, 32, 128 connections: req/s, p50, p99
    memory       RSS of the process tree before and while 256 slow streams are open (idle: bench.run, after start)

Each workload is a few request shapes (the tiny request; each fixture; each level of the sweep; each stream), and
each shape is measured in windows. A target measured alone gets a shape's time in one window (the streams: four,
alternating the long and the short stream). Targets compared with each other (ccm and its variants, bench.variants)
are all running at once and get it in `Plan.rounds` short windows each, alternating between the targets shape by
shape and round by round (`schedule`): a noisy second on this shared machine lands on both sides of a comparison,
not on one. A figure over several windows is the median of the windows' figures, which are kept beside it.

Each workload's result is a JSON-ready dict; a failure inside one is recorded as {"error": "..."} and the run goes
on. Latencies are in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
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
    rounds: int = 5  # windows per shape and target when ccm is compared with its variants (bench.variants)
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
        return {"error": _error_text(error)}


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


# ---------------------------------------------------------------------------------------------------------------
# Shapes, windows and the scheduler: every workload is a few request shapes, each measured in windows; a target
# measured alone gets each shape's time in one window (a few for the streams), targets compared with each other get
# it in `rounds` short windows, alternating between them (`schedule`).

Figures = dict[str, Any]


@dataclass(frozen=True)
class Shape:
    """One request shape of a workload: `warm` once per target, then `window(target, seconds)` once per round;
    `combine` folds one target's windows into its figures for the shape."""

    name: str
    window: Callable[[Target, float], Awaitable[Figures]]
    combine: Callable[[list[Figures]], Figures]
    seconds: float = 0.0  # the shape's measured time per target, split over its rounds
    warm: Callable[[Target], Awaitable[None]] | None = None
    rounds: int = 1  # rounds when a target is measured alone
    fixed: bool = False  # the same count of rounds when targets are compared (a burst is one round, not a time)
    min_window: float = 0.0  # wrk measures whole seconds
    static: Figures = field(default_factory=dict)  # figures known before measuring (a fixture's size)

    def rounds_for(self, compared: int | None) -> int:
        """Rounds of this shape: alone (`compared` None), or with `compared` rounds for a comparison."""
        if self.fixed or compared is None:
            return self.rounds
        return max(self.rounds, compared)

    def window_seconds(self, rounds: int) -> float:
        return max(self.min_window, self.seconds / rounds)


@dataclass(frozen=True)
class Workload:
    name: str
    shapes: list[Shape]
    assemble: Callable[[dict[str, Figures]], Figures]  # shape name -> its figures => the workload's result


def schedule(targets: Sequence[str], shapes: Sequence[Shape], compared: int | None) -> list[tuple[int, Shape, str]]:
    """The order of the windows, as (round, shape, target): round after round, every shape in turn, and for each shape
    every target back to back — in the given order in even rounds and reversed in odd ones, so that neither is
    always first after the other (what a neighbour's noisy second, or a target's own warm-up, would favour)."""
    order = []
    for round_ in range(max((shape.rounds_for(compared) for shape in shapes), default=0)):
        turn = list(targets) if round_ % 2 == 0 else list(reversed(targets))
        for shape in shapes:
            if round_ < shape.rounds_for(compared):
                order += [(round_, shape, target) for target in turn]
    return order


async def measure_workload(workload: Workload, targets: Sequence[Target],
                           compared: int | None) -> dict[str, Figures]:
    """The workload's result per target name. A shape that fails for a target (a warm-up or a window raises) is
    recorded as {"error": ...} for that target, and its further windows are skipped; the others go on."""
    by_name = {target.name: target for target in targets}
    windows: dict[tuple[str, str], list[Figures]] = {}
    failed: dict[tuple[str, str], str] = {}
    for shape in workload.shapes:
        for target in targets:
            if shape.warm is not None:
                try:
                    await shape.warm(target)
                except Exception as error:  # a result to report
                    failed[shape.name, target.name] = _error_text(error)
    for _, shape, name in schedule(list(by_name), workload.shapes, compared):
        if (shape.name, name) in failed:
            continue
        try:
            figures = await shape.window(by_name[name], shape.window_seconds(shape.rounds_for(compared)))
        except Exception as error:  # a result to report
            failed[shape.name, name] = _error_text(error)
            continue
        windows.setdefault((shape.name, name), []).append(figures)
    results = {}
    for name in by_name:
        parts = {}
        for shape in workload.shapes:
            if (shape.name, name) in failed:
                parts[shape.name] = {**shape.static, "error": failed[shape.name, name]}
            else:
                parts[shape.name] = {**shape.static, **shape.combine(windows.get((shape.name, name), []))}

        async def assemble(parts: dict[str, Figures] = parts) -> Figures:
            return workload.assemble(parts)

        results[name] = await guarded(assemble)
    return results


SUMMED = ("requests", "errors", "samples")  # counts over a shape's windows; every other number is their median


def combine_windows(windows: list[Figures]) -> Figures:
    """One window's figures as they are; several windows' numbers as their medians (counts summed), each window's
    own figures kept under `windows`."""
    if len(windows) == 1:
        return dict(windows[0])
    combined: Figures = {}
    for key in dict.fromkeys(key for window in windows for key in window):
        values = [window[key] for window in windows if key in window]
        if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            combined[key] = sum(values) if key in SUMMED else round(statistics.median(values), 3)
        else:
            combined[key] = next((value for value in values if value), values[0])
    return {**combined, "rounds": len(windows), "windows": windows}


def latency_shape(name: str, url: Callable[[Target], str], body: bytes, connections: int, seconds: float,
                  plan: Plan, static: Figures | None = None, warm_first: bool = True) -> Shape:
    async def warm_up(target: Target) -> None:
        await warm(url(target), body)

    async def window(target: Target, seconds: float) -> Figures:
        before = target.cpu_s()
        figures = await latency(url(target), body, connections, seconds, plan)
        after = target.cpu_s()
        # the target's own CPU per request: what a noisy neighbour moves far less than wall time (the Python
        # client's one unmeasured request per connection is served in the window too)
        served = figures.get("requests", 0) + (0 if plan.use_wrk else connections)
        if before is not None and after is not None and served:
            figures["cpu_us_per_request"] = round((after - before) / served * 1e6, 1)
        return figures

    return Shape(name, window, combine_windows, seconds=seconds, warm=warm_up if warm_first else None,
                 min_window=1.0 if plan.use_wrk else 0.0, static=static or {})


def tiny(plan: Plan) -> Workload:
    shape = latency_shape("tiny", lambda target: url_for(target, DEFAULT), TINY, 1, plan.seconds, plan)
    return Workload("tiny", [shape], lambda parts: parts["tiny"])


def fixtures(plan: Plan, passthrough: bool = False) -> Workload:
    route = ANTHROPIC if passthrough else DEFAULT
    shapes = []
    for name, body in fixture_bodies(plan).items():
        raw = encode({**body, "model": ANTHROPIC.model}) if passthrough else encode(body)
        shapes.append(latency_shape(name, lambda target: url_for(target, route), raw, 1, plan.fixture_seconds, plan,
                                    static={"bytes": len(raw)}))
    return Workload("passthrough" if passthrough else "fixtures", shapes, dict)


STREAM_ROUNDS = 4  # the long and the short stream alternate in this many windows: a noisy second hits both alike
STREAM_FLAVOURS = (("openai", OPENAI_STREAM, OPENAI_STREAM_SHORT),
                   ("anthropic", ANTHROPIC_STREAM, ANTHROPIC_STREAM_SHORT))


def stream(plan: Plan) -> Workload:
    """Per flavour, the 200-chunk stream and the short one, each on one connection, in alternating windows. The
    short one gives the cost per stream (its first byte is the first-byte figure); the difference between the two,
    the cost per chunk — even when the router writes nothing until it has translated a whole burst of chunks.
    p50s are over all the windows' streams."""
    shapes = []
    for flavour, full, short in STREAM_FLAVOURS:
        for prefix, route in (("", full), ("short_", short)):
            body = with_model(TINY, route.model, stream=True)

            async def warm_up(target: Target, route: Route = route, body: bytes = body) -> None:
                await warm(url_for(target, route), body)

            async def window(target: Target, seconds: float, route: Route = route, body: bytes = body) -> Figures:
                first: list[float] = []
                total: list[float] = []
                await stream_timings(url_for(target, route), body, seconds, first, total)
                return {"first": first, "total": total}

            shapes.append(Shape(f"{flavour}/{prefix}", window, combine_streams, seconds=plan.stream_seconds,
                                warm=warm_up, rounds=STREAM_ROUNDS))

    def assemble(parts: dict[str, Figures]) -> Figures:
        results: Figures = {}
        for flavour, _, _ in STREAM_FLAVOURS:
            mine = {name.split("/")[1]: figures for name, figures in parts.items() if name.startswith(flavour + "/")}
            error = next((figures["error"] for figures in mine.values() if "error" in figures), None)
            if error:
                results[flavour] = {"error": error}
                continue
            entry: Figures = {"chunks": STREAM_CHUNKS, "short_chunks": SHORT_CHUNKS[flavour]}
            for prefix, figures in mine.items():
                entry |= {f"{prefix}{key}": value for key, value in figures.items()}
            results[flavour] = entry
        return results

    return Workload("stream", shapes, assemble)


def combine_streams(windows: list[Figures]) -> Figures:
    first = [value for window in windows for value in window["first"]]
    total = [value for window in windows for value in window["total"]]
    if not total:
        raise RuntimeError("no stream finished in its windows")
    return {"first_byte_p50_ms": round(statistics.median(first), 3), "total_p50_ms": round(statistics.median(total), 3),
            "samples": len(total),
            "windows": [{"first_byte_p50_ms": round(statistics.median(window["first"]), 3),
                         "total_p50_ms": round(statistics.median(window["total"]), 3), "samples": len(window["total"])}
                        for window in windows if window["total"]]}


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


def burst(plan: Plan) -> Workload:
    from bench.bench_tokens import context_burst  # the /context burst as bench_tokens builds it

    bodies = context_burst()

    async def window(target: Target, seconds: float) -> Figures:
        wall, answers = await loadgen.burst(url_for(target, None), bodies, CLIENT_HEADERS)
        failed = [answer for answer in answers if answer.status != 200]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(answers)} answers failed, first: HTTP {failed[0].status} "
                               f"{failed[0].body[:300].decode(errors='replace')}")
        return {"wall_ms": wall * 1000}

    def combine(windows: list[Figures]) -> Figures:
        walls = [window["wall_ms"] for window in windows]
        return {"first_ms": round(walls[0], 3), "median_ms": round(statistics.median(walls), 3),
                "min_ms": round(min(walls), 3), "rounds": len(walls)}

    shape = Shape("burst", window, combine, rounds=plan.burst_rounds, fixed=True, static={"requests": len(bodies)})
    return Workload("burst", [shape], lambda parts: parts["burst"])


def sweep(plan: Plan) -> Workload:
    body = encode(fixture_bodies(Plan(fixtures=(REAL_REQUEST,)))[Path(REAL_REQUEST).stem])
    shapes = [latency_shape(str(connections), lambda target: url_for(target, DEFAULT), body, connections,
                            plan.seconds, plan, warm_first=index == 0)
              for index, connections in enumerate(plan.connections)]
    return Workload("sweep", shapes, dict)


def memory(plan: Plan) -> Workload:
    """Peak RSS while `plan.streams` slow streams (each ~4 s at the upstream's pace) are open at once: one round per
    target, also when compared (a memory figure is not timing noise)."""

    async def window(target: Target, seconds: float) -> Figures:
        url = url_for(target, OPENAI_SLOW)
        body = with_model(TINY, OPENAI_SLOW.model, stream=True)
        before = target.rss_mb()
        peak = before
        tasks = [asyncio.create_task(loadgen.fetch(url, body, CLIENT_HEADERS, timeout=60))
                 for _ in range(plan.streams)]
        started = time.perf_counter()
        while not all(task.done() for task in tasks) and time.perf_counter() - started < 70:
            peak = max(peak, target.rss_mb())
            await asyncio.sleep(0.1)
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        completed = sum(1 for answer in answers if isinstance(answer, loadgen.Answer) and answer.status == 200)
        return {"before_mb": round(before, 1), "streams": plan.streams, "peak_mb": round(peak, 1),
                "completed": completed, "seconds": round(time.perf_counter() - started, 2)}

    shape = Shape("memory", window, combine_windows, fixed=True)
    return Workload("memory", [shape], lambda parts: parts["memory"])


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


BUILDERS: dict[str, Callable[[Plan], Workload]] = {
    "tiny": tiny, "fixtures": fixtures, "passthrough": lambda plan: fixtures(plan, passthrough=True),
    "stream": stream, "burst": burst, "sweep": sweep, "memory": memory,
}


async def run_all(target: Target, names: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """The selected workloads against a started target, in the order of WORKLOADS. The upstream alone skips the
    workloads where it has nothing to compare (memory under streams)."""
    if isinstance(target, Upstream):
        names = tuple(name for name in names if name != "memory")
    return (await run_group([target], names, plan))[target.name]


async def run_group(targets: Sequence[Target], names: tuple[str, ...], plan: Plan,
                    compared: int | None = None) -> dict[str, dict[str, Any]]:
    """The selected workloads against started targets, in the order of WORKLOADS, one after the other; within each,
    the targets' windows alternate (`schedule`). `compared`: the rounds of a comparison (None: each target's
    shapes in the windows of a target measured alone). Returns each target's results by name."""
    results: dict[str, dict[str, Any]] = {target.name: {} for target in targets}
    for name in WORKLOADS:
        if name not in names:
            continue
        started = time.perf_counter()
        try:
            measured = await measure_workload(BUILDERS[name](plan), targets, compared)
        except Exception as error:  # building the workload failed (a fixture unreadable): the same for all
            measured = {target.name: {"error": _error_text(error)} for target in targets}
        took = time.perf_counter() - started
        for target in targets:
            results[target.name][name] = measured[target.name]
            print(f"  {target.name:8s} {name:12s} {took:6.1f} s  {summary(name, measured[target.name])}", flush=True)
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
