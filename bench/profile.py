"""Where ccm's remaining microseconds go: py-spy samples the running `ccm run` process while wrk (or the Python load
generator) sends it the real 50 KB Claude Code request, translated to OpenAI, on one connection.

py-spy (from the bench venv, `make bench` installs it) writes collapsed stacks; `summarise` turns them into CPU
microseconds per request — by package (where the leaf frame's file lives) and by function, both self time and time
including callees — since samples / rate / requests is the Python CPU each request costs. Idle samples (the event
loop waiting) are not recorded, so the figures are work, not waiting.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench import loadgen, wrk
from bench.targets import CACHE, CLIENT_HEADERS, DEFAULT, Target
from bench.workloads import REAL_REQUEST, TINY, Plan, encode, fixture_bodies, url_for, warm

PY_SPY = CACHE / "venv" / "bin" / "py-spy"
OUTERMOST = ("ccm/cli/", "ccm/core/server.py")  # under every sample: left out of the inclusive table
RATE = 500  # samples per second: fine enough for a 5 s window, light enough not to bend the figures much
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
PACKAGES = (  # path fragment -> group; the first match wins, so specific paths come first
    ("/ccm/providers/", "ccm.providers (translation, upstream calls)"),
    ("/ccm/core/", "ccm.core (app, dispatch, runtime)"),
    ("/ccm/", "ccm (route, validate, sse, tokens)"),
    ("/hypercorn/", "hypercorn (server)"),
    ("/uvicorn/", "uvicorn (server)"),
    ("/granian/", "granian (server)"),
    ("/h11/", "h11 (HTTP/1.1 parsing)"),
    ("/httpcore/", "httpcore (client transport)"),
    ("/httpx/", "httpx (client)"),
    ("/httptools/", "httptools (HTTP/1.1 parsing)"),
    ("/anyio/", "anyio"),
    ("/asyncio/", "asyncio (incl. the uvloop C loop, seen as Runner.run)"),
    ("/logging/", "logging"),
    ("/json/", "json (stdlib)"),
    ("/ssl.py", "ssl"),
)


def group(file: str) -> str:
    path = "/" + file.lstrip("/")
    return next((name for fragment, name in PACKAGES if fragment in path),
                "other: " + "/".join(path.split("/")[-2:]).lstrip("/"))


def short(frame: str) -> str:
    """`function (…/ccm/core/app.py:12)` -> `ccm/core/app.py:function`; other packages keep their last two parts."""
    found = FRAME.match(frame)
    if not found:
        return frame
    path = "/" + found["file"].lstrip("/")
    where = "ccm/" + path.rsplit("/ccm/", 1)[1] if "/ccm/" in path else "/".join(path.split("/")[-2:]).lstrip("/")
    return f"{where}:{found['function']}"


def summarise(collapsed: str, requests: int, rate: int, top: int = 15) -> dict[str, Any]:
    by_group: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame]
        if frames and frames[0].startswith(("thread ", "process ")):
            frames = frames[1:]
        if not frames:
            continue
        samples += count
        leaf = FRAME.match(frames[-1])
        by_group[group(leaf["file"] if leaf else frames[-1])] += count
        self_time[short(frames[-1])] += count
        for name in {short(frame) for frame in frames}:
            inclusive[name] += count

    def per_request(count: int) -> float:
        return round(count / rate / max(requests, 1) * 1e6, 1)

    return {
        "requests": requests, "samples": samples, "rate": rate,
        "cpu_us_per_request": per_request(samples),
        "by_package": [{"package": name, "us": per_request(count), "share": round(count / samples, 3)}
                       for name, count in by_group.most_common()] if samples else [],
        "self": [{"function": name, "us": per_request(count), "share": round(count / samples, 3)}
                 for name, count in self_time.most_common(top)] if samples else [],
        "inclusive": [{"function": name, "us": per_request(count), "share": round(count / samples, 3)}
                      for name, count in inclusive.most_common()
                      if name.startswith("ccm/") and not name.startswith(OUTERMOST)][:top] if samples else [],
    }


async def profile(target: Target, plan: Plan, seconds: float = 6.0, request: str = "real") -> dict[str, Any]:
    """Profile `target` (a started ccm) under the real request (or, `request="tiny"`, the tiny one), translated to
    OpenAI, one connection."""
    if not PY_SPY.exists():
        return {"error": f"py-spy is not installed at {PY_SPY} (make bench installs it)"}
    assert target.process is not None
    body = (TINY if request == "tiny"
            else encode(fixture_bodies(Plan(fixtures=(REAL_REQUEST,)))[Path(REAL_REQUEST).stem]))
    url = url_for(target, DEFAULT)
    await warm(url, body, 20)
    with tempfile.TemporaryDirectory(prefix="ccm-profile-") as folder:
        output = Path(folder) / "stacks.txt"
        spy = subprocess.Popen([str(PY_SPY), "record", "--pid", str(target.process.pid), "--rate", str(RATE),
                                "--duration", str(round(seconds)), "--format", "raw", "--nonblocking",
                                "--output", str(output)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        await asyncio.sleep(0.5)  # py-spy attaches before the load starts
        if plan.use_wrk:
            measured = await asyncio.to_thread(wrk.run, url, body, 1, seconds - 1, CLIENT_HEADERS)
            requests, p50 = measured.requests, measured.p50_ms
        else:
            load = await loadgen.load(url, body, 1, seconds - 1, CLIENT_HEADERS)
            requests, p50 = len(load.latencies_s), sorted(load.latencies_s)[len(load.latencies_s) // 2] * 1000
        try:
            spy_output, _ = await asyncio.to_thread(spy.communicate, timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            return {"error": "py-spy did not finish"}
        if spy.returncode != 0 or not output.exists():
            return {"error": f"py-spy exited {spy.returncode}: {spy_output.decode(errors='replace').strip()[-300:]}"}
        # py-spy samples a little longer than the load runs; idle samples are not recorded, so that adds nothing
        result = summarise(output.read_text(), requests, RATE)
    result["p50_ms_while_profiled"] = round(p50, 3)
    result["request"] = request
    return result
