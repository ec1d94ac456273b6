"""`make bench`: ccm, claude-code-router and LiteLLM side by side against one nginx upstream, in one run.

    python -m bench.run [--only tiny,sweep,...] [--targets ccm,ccr,litellm,upstream] [--quick]
                        [--loadgen wrk|python] [--ccm-arg=--server --ccm-arg=uvicorn]

Workloads: tiny fixtures passthrough stream burst sweep memory (bench.workloads), plus startup (every router, on
its start), reload (bench/bench_reload.py), profile (py-spy on ccm, bench.profile), micro (bench/bench_route.py
and bench/bench_tokens.py, in-process) and paced (bench.paced: what ccm adds to each event of a stream whose events
arrive one at a time, and its CPU per event, against its own Python upstream). The upstream is always started; it is measured alone too unless
`--targets` leaves it out.

A full run (no --only, --targets, --quick) writes bench/results/latest.json, docs/benchmarks.md and the chart. A
partial run writes its JSON under the cache (${CCM_CACHE:-~/.cache/ccm}/bench/results/) and prints each figure
beside the one in latest.json, so a change to ccm can be measured in seconds: `make bench ARGS="--only tiny
--targets ccm"`. `--report` measures nothing: it rebuilds the page and the chart from latest.json.
Every process the run starts is stopped at its end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import paced, report, wrk
from bench.profile import profile
from bench.targets import CACHE, REPO, Ccm, ClaudeCodeRouter, LiteLLM, Target, TargetUnavailable, Upstream
from bench.workloads import WORKLOADS, Plan, run_all

EXTRA = ("startup", "reload", "profile", "micro", "paced")
ROUTERS = {"ccm": (Ccm, "ccm"), "ccr": (ClaudeCodeRouter, "claude-code-router"), "litellm": (LiteLLM, "LiteLLM")}
LATEST = REPO / "bench" / "results" / "latest.json"
KEEP_RUNS = 3  # run folders (configs and logs of every process) kept under the cache
STARTUP_RUNS = 3  # the first start, then two more: the median of three
QUICK = Plan(seconds=1.0, fixture_seconds=1.0, stream_seconds=1.0, burst_rounds=3, streams=64)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(WORKLOADS + EXTRA)}")
    parser.add_argument("--targets", default="", help="comma-separated: upstream, ccm, ccr, litellm")
    parser.add_argument("--quick", action="store_true", help="shorter windows (1 s), fewer streams: for iterating")
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk" if wrk.available() else "python")
    parser.add_argument("--ccm-arg", action="append", default=[], help="passed to `ccm run` (repeat per word)")
    parser.add_argument("--profile-request", choices=("real", "tiny"), default="real",
                        help="the request the profile workload sends (default: the real 50 KB one)")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: rebuild docs/benchmarks.md and the chart from latest.json")
    options = parser.parse_args(argv)
    options.workloads = _names(options.only, WORKLOADS + EXTRA)
    options.targets_selected = _names(options.targets, ("upstream", *ROUTERS))
    options.full = not options.only and not options.targets and not options.quick
    return options


def _names(text: str, known: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return known
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


async def measure(options: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    runs = CACHE / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    prune(CACHE / "runs", keep=KEEP_RUNS - 1)
    upstream = Upstream("upstream", "nginx (upstream alone)", runs / "upstream")
    results: dict[str, Any] = {"targets": {}}
    try:
        await upstream.start(timeout=10)
    except TargetUnavailable as error:
        raise SystemExit(f"the upstream cannot start: {error}")
    try:
        if "upstream" in options.targets_selected:
            results["targets"]["upstream"] = {"label": upstream.label, "version": upstream.version(),
                                              "rss_idle_mb": round(upstream.rss_mb(), 1),
                                              "workloads": await run_all(upstream, options.workloads, plan)}
        for name, (kind, label) in ROUTERS.items():
            if name in options.targets_selected:
                target = kind(name, label, runs / name, upstream_url=upstream.url,
                              extra_args=options.ccm_arg if name == "ccm" else [])
                results["targets"][name] = await measure_router(target, options, plan)
    finally:
        upstream.stop()
    if "ccm" in options.targets_selected:
        if "reload" in options.workloads:
            results["reload"] = run_script([str(REPO / "bench" / "bench_reload.py"), "20"], timeout=180)
        if "paced" in options.workloads:
            results["paced"] = run_script(["-m", "bench.paced"], timeout=240)
            results["paced"].update(paced.parse_summary(results["paced"].get("output", "")))
            print(f"  ccm      paced        {results['paced'].get('output') or results['paced'].get('error')}",
                  flush=True)
        if "micro" in options.workloads:
            results["micro"] = {"route": run_script([str(REPO / "bench" / "bench_route.py")], timeout=180),
                                "tokens": run_script(["-m", "bench.bench_tokens"], timeout=180)}
    return results


async def measure_router(target: Target, options: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    print(f"{target.label}: starting", flush=True)
    result: dict[str, Any] = {"label": target.label}
    try:
        await target.start()
        result["version"] = target.version()
        result["startup_s"] = round(target.startup_s, 3)
        await asyncio.sleep(1.0)  # let start-up work (imports, caches, timers) settle before the idle figure
        result["rss_idle_mb"] = round(target.rss_mb(), 1)
        print(f"  {target.name:8s} started in {target.startup_s:.2f} s, idle RSS {result['rss_idle_mb']:.0f} MB",
              flush=True)
        result["workloads"] = await run_all(target, options.workloads, plan)
        if isinstance(target, Ccm) and "profile" in options.workloads:
            result["profile"] = await profile(target, plan, request=options.profile_request)
            print(f"  {target.name:8s} profile      {report.profile_line(result['profile'])}", flush=True)
        result["rss_after_mb"] = round(target.rss_mb(), 1)
        if isinstance(target, Ccm):
            result["args"] = target.extra_args
    except TargetUnavailable as error:
        result["error"] = str(error)
        print(f"  {target.name:8s} unavailable: {error}", flush=True)
    finally:
        target.stop()
    if "startup" in options.workloads and "error" not in result:
        samples = [target.startup_s]
        for _ in range(STARTUP_RUNS - 1):
            try:
                await target.start()
                samples.append(target.startup_s)
            except TargetUnavailable as error:
                result["startup_error"] = str(error)
            finally:
                target.stop()
        result["startup_samples_s"] = [round(sample, 3) for sample in samples]
        result["startup_s"] = round(statistics.median(samples), 3)
        print(f"  {target.name:8s} startup      median {result['startup_s']:.2f} s of {samples_text(samples)}",
              flush=True)
    return result


def samples_text(samples: list[float]) -> str:
    return ", ".join(f"{sample:.2f}" for sample in samples)


def prune(folder: Path, keep: int) -> None:
    """Remove all but the newest `keep` run folders (claude-code-router's request logs take ~200 MB a run)."""
    if folder.is_dir():
        for old in sorted(folder.iterdir())[:-keep or None]:
            shutil.rmtree(old, ignore_errors=True)


def run_script(arguments: list[str], timeout: float) -> dict[str, Any]:
    """One of the in-process benchmarks next to this file, run with ccm's own interpreter; its printout is kept."""
    try:
        done = subprocess.run([str(Ccm.python), *arguments], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    output = done.stdout.strip()
    found = re.search(r"median ([\d.]+) ms", output)
    return {"output": output, **({"median_ms": float(found.group(1))} if found else {})}


def machine() -> dict[str, Any]:
    def command(*words: str) -> str:
        try:
            done = subprocess.run(list(words), capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"
        return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    packages = command(str(Ccm.python), "-c",
                       "import importlib.metadata as m\n"
                       "names = ('hypercorn', 'uvicorn', 'granian', 'httpx', 'httpcore', 'httptools',"
                       " 'uvloop', 'orjson', 'h11', 'anyio', 'tiktoken')\n"
                       "found = []\n"
                       "for name in names:\n"
                       "    try: found.append(f'{name} {m.version(name)}')\n"
                       "    except m.PackageNotFoundError: pass\n"
                       "print(', '.join(found))")
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "loadavg_start": os.getloadavg()[0],
        "python": command(str(Ccm.python), "--version"), "node": command("node", "--version"),
        "nginx": command("nginx", "-v").replace("nginx version: ", ""),
        "wrk": " ".join(command("wrk", "-v").split()[:2]), "ccm_packages": packages,
    }


def main(argv: list[str] | None = None) -> None:
    options = parse(sys.argv[1:] if argv is None else argv)
    if options.report:
        results = json.loads(LATEST.read_text())
        results["summary"] = report.headline(results)
        report.write_docs(results)
        print("rebuilt docs/benchmarks.md and its chart from bench/results/latest.json")
        return
    plan = QUICK if options.quick else Plan()
    plan = Plan(**{**plan.__dict__, "use_wrk": options.loadgen == "wrk"})
    started = time.perf_counter()
    meta = {**machine(), "loadgen": options.loadgen, "argv": sys.argv[1:] if argv is None else argv,
            "plan": {key: value for key, value in plan.__dict__.items()}}
    print(f"bench: {meta['cpu']}, {meta['nproc']} cores, load {meta['loadavg_start']:.2f}; "
          f"load generator: {options.loadgen}", flush=True)
    results = asyncio.run(measure(options, plan))
    results["meta"] = {**meta, "loadavg_end": os.getloadavg()[0], "seconds": round(time.perf_counter() - started)}
    results["summary"] = report.headline(results)
    before = json.loads(LATEST.read_text()) if LATEST.exists() else None
    if options.full:
        LATEST.parent.mkdir(parents=True, exist_ok=True)
        LATEST.write_text(json.dumps(results, indent=1) + "\n")
        report.write_docs(results)
        print(f"wrote {LATEST.relative_to(REPO)}, docs/benchmarks.md and its chart", flush=True)
    else:
        out = CACHE / "results" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}", flush=True)
    print(report.console_table(results["summary"], before["summary"] if before else None), flush=True)
    print(f"bench: done in {results['meta']['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
