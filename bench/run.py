"""`make bench`: ccm, claude-code-router and LiteLLM side by side against one nginx upstream, in one run.

    python -m bench.run [--only tiny,sweep,...] [--targets ccm,ccr,litellm,upstream] [--quick]
                        [--loadgen wrk|python] [--ccm-arg=--server --ccm-arg=uvicorn]
                        [--variants NAME=REV,...] [--ccm-variant 'NAME:SPEC' ...] [--rounds N]

Workloads: tiny fixtures passthrough stream burst sweep memory (bench.workloads), plus startup (every router, on
its start), reload (bench/bench_reload.py), profile (py-spy on ccm, bench.profile), micro (bench/bench_route.py
and bench/bench_tokens.py, in-process) and paced (bench.paced: what ccm adds to each event of a stream whose events
arrive one at a time, and its CPU per event, against its own Python upstream). The upstream is always started; it is
measured alone too unless `--targets` leaves it out.

A full run (no --only, --targets, --quick) writes bench/results/latest.json, docs/benchmarks.md and the chart. A
partial run writes its JSON under the cache (${CCM_CACHE:-~/.cache/ccm}/bench/results/) and prints each figure
beside the one in latest.json, so a change to ccm can be measured in seconds: `make bench ARGS="--only tiny
--targets ccm"`. `--report` measures nothing: it rebuilds the page and the chart from latest.json.
Every process the run starts is stopped at its end, also on Ctrl-C.

ccm against ccm (bench.variants): `--variants base=04f803c` adds a target per NAME=REV, that revision of ccm in a
worktree and venv of its own, run as the `ccm` target is; `--ccm-variant 'NAME:SPEC'` adds one changed by `ccm run`
arguments, environment and route-file text (`--ccm-arg=--no-ledger --ccm-variant ledger:inherit=no`: ledger off
against on; `{workdir}` is a variant's run folder). With variants, `ccm`
and every variant run at once and each workload alternates short windows between them, `--rounds` rounds (5; 3
with --quick), each figure the median of its windows; startup alternates too. The report's "ccm against ccm"
section gives each variant's figures beside ccm's, with the difference and the ratio. reload, paced, profile and
micro stay the `ccm` target's.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import paced, report, wrk
from bench.profile import profile
from bench.targets import CACHE, REPO, Ccm, ClaudeCodeRouter, LiteLLM, Target, TargetUnavailable, Upstream
from bench.variants import (
    CcmVariant,
    Tree,
    VariantError,
    VariantSpec,
    check_names,
    parse_spec,
    parse_variants,
    prepare_tree,
    variant_targets,
)
from bench.workloads import WORKLOADS, Plan, run_all, run_group

EXTRA = ("startup", "reload", "profile", "micro", "paced")
ROUTERS = {"ccm": (Ccm, "ccm"), "ccr": (ClaudeCodeRouter, "claude-code-router"), "litellm": (LiteLLM, "LiteLLM")}
LATEST = REPO / "bench" / "results" / "latest.json"
KEEP_RUNS = 3  # run folders (configs and logs of every process) kept under the cache
STARTUP_RUNS = 3  # the first start, then two more: the median of three
QUICK = Plan(seconds=1.0, fixture_seconds=1.0, stream_seconds=1.0, burst_rounds=3, streams=64, rounds=3)


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
    parser.add_argument("--variants", default="", metavar="NAME=REV,...",
                        help="ccm at another revision per NAME=REV, beside the checkout's (bench.variants)")
    parser.add_argument("--ccm-variant", action="append", default=[], metavar="NAME:SPEC",
                        help="a ccm variant: NAME:rev=…;args=…;env=K=V;routes=@FILE;setup=…;inherit=no;label=… "
                             "(repeat; {workdir} is its run folder)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="windows per shape and target when variants are compared (default 5, --quick 3)")
    options = parser.parse_args(argv)
    options.workloads = _names(options.only, WORKLOADS + EXTRA)
    options.targets_selected = _names(options.targets, ("upstream", *ROUTERS))
    options.full = not options.only and not options.targets and not options.quick
    try:
        options.variant_specs = parse_variants(options.variants) + [parse_spec(text) for text in options.ccm_variant]
        check_names(options.variant_specs)
    except VariantError as error:
        raise SystemExit(f"make bench: {error}") from error
    if options.variant_specs and "ccm" not in options.targets_selected:
        raise SystemExit("make bench: variants are measured against the ccm target: add ccm to --targets")
    if options.rounds is not None and options.rounds < 1:
        raise SystemExit("make bench: --rounds is at least 1")
    return options


def _names(text: str, known: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return known
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


async def measure(options: argparse.Namespace, plan: Plan, trees: dict[str, Tree] | None = None) -> dict[str, Any]:
    runs = CACHE / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    prune(CACHE / "runs", keep=KEEP_RUNS - 1)
    upstream = Upstream("upstream", "nginx (upstream alone)", runs / "upstream")
    results: dict[str, Any] = {"targets": {}}
    try:
        await upstream.start(timeout=10)
    except TargetUnavailable as error:
        raise SystemExit(f"the upstream cannot start: {error}") from error
    try:
        if "upstream" in options.targets_selected:
            results["targets"]["upstream"] = {"label": upstream.label, "version": upstream.version(),
                                              "rss_idle_mb": round(upstream.rss_mb(), 1),
                                              "workloads": await run_all(upstream, options.workloads, plan)}
        for name, (kind, label) in ROUTERS.items():
            if name not in options.targets_selected:
                continue
            target = kind(name, label, runs / name, upstream_url=upstream.url,
                          extra_args=options.ccm_arg if name == "ccm" else [])
            group: list[Target] = [target]
            if name == "ccm" and options.variant_specs:
                group += variant_targets(options.variant_specs, runs, upstream.url, options.ccm_arg,
                                         prepare=lambda rev: (trees or {}).get(rev) or prepare_tree(rev))
                results["comparison"] = {"against": "ccm", "rounds": plan.rounds,
                                         "variants": [spec.name for spec in options.variant_specs]}
            results["targets"].update(await measure_group(group, options, plan,
                                                          compared=plan.rounds if len(group) > 1 else None))
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


async def measure_group(targets: list[Target], options: argparse.Namespace, plan: Plan,
                        compared: int | None) -> dict[str, dict[str, Any]]:
    """Start every target of the group (one router alone, or ccm and its variants), run the workloads against all
    of them (alternating their windows when `compared`), stop them, then time their starts again (alternating)."""
    results: dict[str, dict[str, Any]] = {target.name: {"label": target.label} for target in targets}
    running: list[Target] = []
    try:
        for target in targets:
            print(f"{target.label}: starting", flush=True)
            result = results[target.name]
            try:
                await target.start()
            except TargetUnavailable as error:
                result["error"] = str(error)
                print(f"  {target.name:8s} unavailable: {error}", flush=True)
                continue
            running.append(target)
            result["version"] = target.version()
            result["startup_s"] = round(target.startup_s, 3)
            if isinstance(target, CcmVariant):
                result["variant"] = target.describe()
            elif isinstance(target, Ccm):
                result["args"] = target.extra_args
        await asyncio.sleep(1.0)  # let start-up work (imports, caches, timers) settle before the idle figure
        for target in running:
            result = results[target.name]
            result["rss_idle_mb"] = round(target.rss_mb(), 1)
            print(f"  {target.name:8s} started in {target.startup_s:.2f} s, idle RSS {result['rss_idle_mb']:.0f} MB",
                  flush=True)
        if running:
            measured = await run_group(running, options.workloads, plan, compared)
            for target in running:
                results[target.name]["workloads"] = measured[target.name]
        for target in running:
            if type(target) is Ccm and "profile" in options.workloads:
                results[target.name]["profile"] = await profile(target, plan, request=options.profile_request)
                print(f"  {target.name:8s} profile      {report.profile_line(results[target.name]['profile'])}",
                      flush=True)
            results[target.name]["rss_after_mb"] = round(target.rss_mb(), 1)
    finally:
        for target in targets:
            target.stop()
    if "startup" in options.workloads and running:
        samples = {target.name: [target.startup_s] for target in running}
        for round_ in range(STARTUP_RUNS - 1):
            for target in (reversed(running) if round_ % 2 == 0 else running):  # the first starts went in order
                try:
                    await target.start()
                    samples[target.name].append(target.startup_s)
                except TargetUnavailable as error:
                    results[target.name]["startup_error"] = str(error)
                finally:
                    target.stop()
        for target in running:
            result, found = results[target.name], samples[target.name]
            result["startup_samples_s"] = [round(sample, 3) for sample in found]
            result["startup_s"] = round(statistics.median(found), 3)
            print(f"  {target.name:8s} startup      median {result['startup_s']:.2f} s of {samples_text(found)}",
                  flush=True)
    return results


def prepare_trees(specs: list[VariantSpec]) -> dict[str, Tree]:
    """Each revision a variant names, checked out with a venv of its own (bench.variants.prepare_tree): before the
    upstream starts, since a first install takes a minute or two."""
    trees: dict[str, Tree] = {}
    for spec in specs:
        if spec.rev and spec.rev not in trees:
            print(f"bench: ccm at {spec.rev} for the variant {spec.name}: worktree and venv under "
                  f"{CACHE / 'trees'} (made once, then reused)", flush=True)
            try:
                tree = trees[spec.rev] = prepare_tree(spec.rev)
            except VariantError as error:
                raise SystemExit(f"make bench: the variant {spec.name}: {error}") from error
            print(f"bench: {spec.rev} = {tree.short} in {tree.folder}"
                  f"{' (reused)' if tree.reused else ''}"
                  f"{'' if tree.pinned else ' — its packages could not be pinned to the checkout venv versions'}",
                  flush=True)
    return trees


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
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
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
    plan = Plan(**{**plan.__dict__, "use_wrk": options.loadgen == "wrk",
                   **({"rounds": options.rounds} if options.rounds else {})})
    trees = prepare_trees(options.variant_specs)
    started = time.perf_counter()
    meta = {**machine(), "loadgen": options.loadgen, "argv": sys.argv[1:] if argv is None else argv,
            "plan": {key: value for key, value in plan.__dict__.items()}}
    print(f"bench: {meta['cpu']}, {meta['nproc']} cores, load {meta['loadavg_start']:.2f}; "
          f"load generator: {options.loadgen}", flush=True)
    results = asyncio.run(measure(options, plan, trees))
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
    if results.get("comparison"):
        print(report.comparison_console(results), flush=True)
    print(f"bench: done in {results['meta']['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
