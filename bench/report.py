"""From raw results to figures people read: the headline per router, the console table (with the previous run
beside it), and docs/benchmarks.md.

docs/benchmarks.md mixes hand-written prose with generated blocks fenced by `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->`; a run replaces only what is inside the fences (machine, results, variants, profile, micro), so
the prose around them survives every rerun. A missing file is created with the fences and headings in place.

"Added" is always router p50 minus the upstream-alone p50 for the same request shape, measured in the same run.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench.targets import CACHE, REPO
from bench.upstream import STREAM_CHUNKS
from bench.workloads import REAL_REQUEST

DOC = REPO / "docs" / "benchmarks.md"
CHART = REPO / "docs" / "benchmarks" / "latency-throughput.png"
ROUTERS = ("ccm", "ccr", "litellm")
REAL = Path(REAL_REQUEST).stem
BIG_REQUEST_BYTES = 40_000  # "the 50 KB ones": every fixture above this size

# key, label, unit, lower is better, the target for ccm (None: no target)
METRICS: tuple[tuple[str, str, str, bool, float | None], ...] = (
    ("tiny_p50_ms", "tiny request, 1 conn, p50", "ms", True, None),
    ("tiny_added_ms", "tiny request, added p50", "ms", True, 0.5),
    ("real_p50_ms", "real 50 KB request → OpenAI, 1 conn, p50", "ms", True, None),
    ("real_added_ms", "real 50 KB request → OpenAI, added p50", "ms", True, 1.5),
    ("fixtures_50kb_added_ms", "all 50 KB fixtures → OpenAI, added p50 (median)", "ms", True, 1.5),
    ("passthrough_added_ms", "real 50 KB request → Anthropic passthrough, added p50", "ms", True, None),
    ("rps_32", "real request, 32 conns, req/s", "req/s", False, 500),
    ("stream_first_byte_added_ms", "stream → OpenAI, added to first byte", "ms", True, 1.0),
    ("stream_chunk_added_us", "stream → OpenAI, added per chunk", "µs", True, 100),
    ("paced_event_added_us", "stream → OpenAI, events one at a time, added per event", "µs", True, 100),
    ("stream_passthrough_first_byte_added_ms", "stream → Anthropic, added to first byte", "ms", True, None),
    ("stream_passthrough_chunk_added_us", "stream → Anthropic, added per chunk", "µs", True, None),
    ("burst_ms", "/context burst, 26 count_tokens at once", "ms", True, 50),
    ("rss_idle_mb", "RSS at idle", "MB", True, 80),
    ("rss_streams_mb", "RSS with {streams} concurrent streams", "MB", True, 150),
    ("startup_s", "startup → first answered request", "s", True, 1.0),
    ("reload_ms", "reload save-to-live, median", "ms", True, 100),
)


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _minus(a: float | None, b: float | None, scale: float = 1.0) -> float | None:
    return None if a is None or b is None else round((a - b) * scale, 3)


def headline(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per target: the figures of METRICS (None where not measured), plus the 50 KB fixtures' spread."""
    targets = results.get("targets", {})
    direct = targets.get("upstream", {}).get("workloads", {})
    summary: dict[str, dict[str, Any]] = {}
    for name, data in targets.items():
        work = data.get("workloads", {})
        row: dict[str, Any] = {"version": data.get("version"), "error": data.get("error")}
        row["tiny_p50_ms"] = _get(work, "tiny", "p50_ms")
        row["real_p50_ms"] = _get(work, "fixtures", REAL, "p50_ms") or _get(work, "sweep", "1", "p50_ms")
        row["rps_32"] = _get(work, "sweep", "32", "rps")
        big = {fixture: entry["p50_ms"] for fixture, entry in (work.get("fixtures") or {}).items()
               if isinstance(entry, dict) and "p50_ms" in entry and entry.get("bytes", 0) > BIG_REQUEST_BYTES}
        if big:
            row["fixtures_50kb_p50"] = {"median": round(statistics.median(big.values()), 3),
                                        "min": min(big.values()), "max": max(big.values()), "count": len(big)}
        if name != "upstream":
            row["tiny_added_ms"] = _minus(row["tiny_p50_ms"], _get(direct, "tiny", "p50_ms"))
            direct_real = _get(direct, "fixtures", REAL, "p50_ms") or _get(direct, "sweep", "1", "p50_ms")
            row["real_added_ms"] = _minus(row["real_p50_ms"], direct_real)
            differences = [_minus(p50, _get(direct, "fixtures", fixture, "p50_ms")) for fixture, p50 in big.items()]
            added = [value for value in differences if value is not None]
            row["fixtures_50kb_added_ms"] = round(statistics.median(added), 3) if added else None
            row["passthrough_added_ms"] = _minus(_get(work, "passthrough", REAL, "p50_ms"),
                                                 _get(direct, "passthrough", REAL, "p50_ms"))
            for flavour, prefix in (("openai", "stream"), ("anthropic", "stream_passthrough")):
                mine, theirs = _get(work, "stream", flavour), _get(direct, "stream", flavour)
                if mine and theirs and "total_p50_ms" in mine and "total_p50_ms" in theirs:
                    # first byte: the short stream's (one event, so no router can hide a batch behind it); per
                    # chunk: what 200 chunks cost over the short stream, beyond what they cost the upstream alone
                    first = mine["short_first_byte_p50_ms"] - theirs["short_first_byte_p50_ms"]
                    extra = (mine["total_p50_ms"] - mine["short_total_p50_ms"]) - \
                        (theirs["total_p50_ms"] - theirs["short_total_p50_ms"])
                    row[f"{prefix}_first_byte_added_ms"] = round(first, 3)
                    row[f"{prefix}_chunk_added_us"] = round(extra / (mine["chunks"] - mine["short_chunks"]) * 1000, 1)
            row["burst_ms"] = _get(work, "burst", "median_ms")
            row["rss_idle_mb"] = data.get("rss_idle_mb")
            row["rss_streams_mb"] = _get(work, "memory", "peak_mb")
            row["streams"] = _get(work, "memory", "streams")
            row["streams_completed"] = _get(work, "memory", "completed")
            row["startup_s"] = data.get("startup_s")
        if name == "ccm":
            row["reload_ms"] = _get(results, "reload", "median_ms")
            row["paced_event_added_us"] = _get(results, "paced", "added_us")
        summary[name] = row
    return summary


def _format(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (int, float)):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
        return f"{text} {unit}".strip()
    return str(value)


def _ratio(ccm: Any, peer: Any, lower_is_better: bool) -> str:
    """How many times better ccm is than the peer (below 1: worse)."""
    if not isinstance(ccm, (int, float)) or not isinstance(peer, (int, float)) or ccm <= 0 or peer <= 0:
        return "—"
    ratio = peer / ccm if lower_is_better else ccm / peer
    return f"{ratio:.1f}×" if ratio < 100 else f"{ratio:,.0f}×"


def console_table(summary: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]] | None) -> str:
    """Every measured metric per target; with `before` (latest.json's summary), the earlier figure beside it."""
    lines = []
    for name, row in summary.items():
        if row.get("error"):
            lines.append(f"{name}: unavailable: {row['error']}")
            continue
        for key, label, unit, _, target in METRICS:
            if row.get(key) is None:
                continue
            earlier = (before or {}).get(name, {}).get(key)
            was = f"   (latest.json: {_format(earlier, unit)})" if earlier is not None else ""
            goal = f"   [target {_format(target, unit)}]" if target is not None and name == "ccm" else ""
            label = label.format(streams=row.get("streams") or 256)
            lines.append(f"{name:8s} {label:55s} {_format(row[key], unit):>12s}{was}{goal}")
    return "\n".join(lines)


def profile_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    top = ", ".join(f"{entry['package'].split(' ')[0]} {entry['us']:.0f} µs" for entry in result["by_package"][:4])
    return f"{result['cpu_us_per_request']:.0f} µs CPU per request: {top}"


# ---------------------------------------------------------------------------------------------------------------
# docs/benchmarks.md


def machine_block(meta: dict[str, Any], summary: dict[str, dict[str, Any]]) -> str:
    versions = [f"ccm {summary.get('ccm', {}).get('version') or '—'}",
                f"claude-code-router {summary.get('ccr', {}).get('version') or '—'}",
                f"LiteLLM {summary.get('litellm', {}).get('version') or '—'}"]
    return "\n".join([
        "| | |", "| --- | --- |",
        f"| date | {meta['date']} |",
        f"| CPU | {meta['cpu']}, `nproc` = {meta['nproc']} |",
        f"| memory | {meta['memory_gb']} GB |",
        f"| kernel | {meta['kernel']} |",
        f"| load average (1 min) at start / end | {meta['loadavg_start']:.2f} / {meta['loadavg_end']:.2f} |",
        f"| Python (ccm) | {meta['python']} |",
        f"| Node (claude-code-router) | {meta['node']} |",
        f"| routers | {', '.join(versions)} |",
        f"| ccm's stack | {meta['ccm_packages']} |",
        f"| upstream, load generator | {meta['nginx']}; "
        f"{meta['wrk'] if meta['loadgen'] == 'wrk' else 'bench.loadgen (Python)'} |",
        f"| run | `{' '.join(['make bench', *(meta.get('argv') or [])])}`, {meta['seconds']} s |",
    ])


def results_block(results: dict[str, Any]) -> str:
    summary = results["summary"]
    present = [name for name in ROUTERS if name in summary]
    names = {"ccm": "ccm", "ccr": "claude-code-router", "litellm": "LiteLLM"}
    out = ["| metric | issue target | " + " | ".join(names[name] for name in present)
           + " | upstream alone | " + " | ".join(f"{names[name]} ÷ ccm" for name in present if name != "ccm")
           + " |",
           "| --- " * (3 + len(present) + max(len(present) - 1, 0)) + "|"]
    direct = summary.get("upstream", {})
    for key, label, unit, lower, target in METRICS:
        cells = [_format(summary[name].get(key), unit) + _incomplete(summary[name], key) for name in present]
        if all(cell == "—" for cell in cells):
            continue
        ratios = [_ratio(summary.get("ccm", {}).get(key), summary[name].get(key), lower)
                  for name in present if name != "ccm"]
        goal = ("≤ " if lower else "≥ ") + _format(target, unit) if target is not None else ""
        label = label.format(streams=summary.get("ccm", {}).get("streams") or 256)
        out.append(f"| {label} | {goal} | " + " | ".join(cells) + f" | {_format(direct.get(key), unit)} | "
                   + " | ".join(ratios) + " |")
    spread = [summary[name].get("fixtures_50kb_p50") for name in present]
    if any(spread):
        cells = [f"{_format(entry['median'])} ({_format(entry['min'])}–{_format(entry['max'])}) ms" if entry else "—"
                 for entry in spread]
        direct_spread = direct.get("fixtures_50kb_p50")
        out.append(f"| the {spread[0]['count'] if spread[0] else ''} fixtures ≥ 40 KB → OpenAI, p50 median (min–max) "
                   f"| | " + " | ".join(cells) + " | "
                   + (f"{_format(direct_spread['median'])} ({_format(direct_spread['min'])}–"
                      f"{_format(direct_spread['max'])}) ms" if direct_spread else "—")
                   + " |" + " |" * max(len(present) - 1, 0))
    out.append("")
    out.append("Ratios: how many times better ccm is (the peer's figure ÷ ccm's, or ccm's ÷ the peer's for req/s); "
               "below 1× ccm is behind. Unavailable peers: " + (", ".join(
                   f"{names[name]} ({summary[name]['error']})" for name in present if summary[name].get("error"))
                   or "none") + ".")
    out += ["", *fixtures_table(results), "", *sweep_table(results), "", *stream_table(results)]
    return "\n".join(out)


def _incomplete(row: dict[str, Any], key: str) -> str:
    """A memory figure under streams that did not all finish says so."""
    if key == "rss_streams_mb" and row.get("streams_completed") is not None and \
            row["streams_completed"] < (row.get("streams") or 0):
        return f" ({row['streams_completed']} of {row['streams']} streams done in 60 s)"
    return ""


def _measured(targets: dict[str, Any], workload: str) -> list[str]:
    """The upstream and the routers that have results for `workload`, in the tables' column order."""
    return [name for name in ("upstream", *ROUTERS) if _get(targets, name, "workloads", workload)]


def _header(columns: list[str]) -> list[str]:
    """A markdown table's header row and separator."""
    return ["| " + " | ".join(columns) + " |", "| --- " * len(columns) + "|"]


def fixtures_table(results: dict[str, Any]) -> list[str]:
    targets = results["targets"]
    present = _measured(targets, "fixtures")
    if not present:
        return []
    out = ["Each captured Claude Code request, 1 connection, p50 in ms (→ OpenAI / → Anthropic passthrough):", "",
           *_header(["request", "bytes", *present])]
    for fixture, entry in targets[present[0]]["workloads"]["fixtures"].items():
        cells = []
        for name in present:
            translated = _get(targets, name, "workloads", "fixtures", fixture, "p50_ms")
            passed = _get(targets, name, "workloads", "passthrough", fixture, "p50_ms")
            cells.append(f"{_format(translated)} / {_format(passed)}")
        out.append(f"| {fixture} | {entry.get('bytes', 0):,} | " + " | ".join(cells) + " |")
    return out


def sweep_table(results: dict[str, Any]) -> list[str]:
    targets = results["targets"]
    present = _measured(targets, "sweep")
    if not present:
        return []
    levels = list(targets[present[0]]["workloads"]["sweep"])
    out = ["Concurrency sweep, real 50 KB request → OpenAI: req/s (p50 / p99 ms):", "",
           *_header(["connections", *present])]
    for level in levels:
        cells = []
        for name in present:
            entry = _get(targets, name, "workloads", "sweep", level) or {}
            cells.append("error" if "error" in entry else
                         f"{_format(entry.get('rps'))} "
                         f"({_format(entry.get('p50_ms'))} / {_format(entry.get('p99_ms'))})"
                         + (f", {entry['errors']} errors" if entry.get("errors") else ""))
        out.append(f"| {level} | " + " | ".join(cells) + " |")
    return out


def stream_table(results: dict[str, Any]) -> list[str]:
    targets = results["targets"]
    present = _measured(targets, "stream")
    if not present:
        return []
    out = [f"Streams, p50 in ms: the short stream's first body byte and last byte, then the {STREAM_CHUNKS}-chunk "
           "stream's:", "", *_header(["flavour", *present])]
    for flavour in ("openai", "anthropic"):
        cells = []
        for name in present:
            entry = _get(targets, name, "workloads", "stream", flavour) or {}
            cells.append("error" if "error" in entry else
                         f"{_format(entry.get('short_first_byte_p50_ms'))} / {_format(entry.get('short_total_p50_ms'))}"
                         f"; {_format(entry.get('first_byte_p50_ms'))} / {_format(entry.get('total_p50_ms'))}")
        out.append(f"| → {flavour} | " + " | ".join(cells) + " |")
    return out


def profile_block(results: dict[str, Any]) -> str:
    result = _get(results, "targets", "ccm", "profile")
    if not result:
        return "Not profiled in this run."
    if "error" in result:
        return f"Profile failed: {result['error']}"
    out = [f"py-spy at {result['rate']} Hz over {result['requests']:,} requests (p50 while profiled "
           f"{result['p50_ms_while_profiled']:.3f} ms): **{result['cpu_us_per_request']:.0f} µs of Python CPU per "
           "request**.", "", "| where (leaf frame's package) | µs / request | share |", "| --- | --- | --- |"]
    out += [f"| {entry['package']} | {entry['us']:.1f} | {entry['share']:.0%} |" for entry in result["by_package"][:12]]
    out += ["", "Hottest functions, self time:", "", "| function | µs / request | share |", "| --- | --- | --- |"]
    out += [f"| `{entry['function']}` | {entry['us']:.1f} | {entry['share']:.0%} |" for entry in result["self"][:15]]
    out += ["", "ccm's own functions, including what they call:", "", "| function | µs / request | share |",
            "| --- | --- | --- |"]
    out += [f"| `{entry['function']}` | {entry['us']:.1f} | {entry['share']:.0%} |" for entry in result["inclusive"]]
    return "\n".join(out)


def micro_block(results: dict[str, Any]) -> str:
    parts = []
    for key, title in (("reload", "bench/bench_reload.py 20"), ("paced", "python -m bench.paced"), ("micro", None)):
        value = results.get(key)
        if not value:
            continue
        entries = {"route": value["route"], "tokens": value["tokens"]} if key == "micro" else {key: value}
        for name, entry in entries.items():
            heading = title or {"route": "bench/bench_route.py", "tokens": "python -m bench.bench_tokens"}[name]
            parts += [f"`{heading}`:", "", "```", entry.get("output") or entry.get("error", ""), "```", ""]
    return "\n".join(parts).strip() or "Not run in this run."


# ---------------------------------------------------------------------------------------------------------------
# ccm against ccm: the variants of one run (bench.variants), each beside the `ccm` target measured with it


def _per_chunk_us(stream: Any) -> float | None:
    """What one chunk of the 200-chunk stream costs over the short stream, in µs (the upstream's share included:
    the same for both sides of a comparison)."""
    if not isinstance(stream, dict) or "total_p50_ms" not in stream or "short_total_p50_ms" not in stream:
        return None
    extra_ms = float(stream["total_p50_ms"]) - float(stream["short_total_p50_ms"])
    return round(extra_ms / (int(stream["chunks"]) - int(stream["short_chunks"])) * 1000, 2)


def comparison_figures(results: dict[str, Any], name: str) -> list[tuple[str, str, bool, float | None]]:
    """(label, unit, lower is better, value) of one target of a comparison, in the report's order."""
    data = _get(results, "targets", name) or {}
    work = data.get("workloads") or {}
    row = _get(results, "summary", name) or {}
    figures: list[tuple[str, str, bool, float | None]] = [
        ("tiny request, 1 conn, p50", "ms", True, row.get("tiny_p50_ms")),
        ("tiny request, 1 conn, p99", "ms", True, _get(work, "tiny", "p99_ms")),
        ("tiny request, CPU per request", "µs", True, _get(work, "tiny", "cpu_us_per_request")),
        ("real 50 KB request → OpenAI, 1 conn, p50", "ms", True, _get(work, "fixtures", REAL, "p50_ms")),
        ("real 50 KB request → OpenAI, 1 conn, p99", "ms", True, _get(work, "fixtures", REAL, "p99_ms")),
        ("real 50 KB request → OpenAI, CPU per request", "µs", True,
         _get(work, "fixtures", REAL, "cpu_us_per_request")),
        ("all 50 KB fixtures → OpenAI, p50 (median)", "ms", True, _get(row, "fixtures_50kb_p50", "median")),
        ("real 50 KB request → Anthropic passthrough, p50", "ms", True, _get(work, "passthrough", REAL, "p50_ms")),
    ]
    for level, entry in (work.get("sweep") or {}).items():
        if isinstance(entry, dict):
            conns = f"{level} conn{'s' if level != '1' else ''}"
            figures += [(f"real request, {conns}, req/s", "req/s", False, entry.get("rps")),
                        (f"real request, {conns}, p50", "ms", True, entry.get("p50_ms")),
                        (f"real request, {conns}, CPU per request", "µs", True, entry.get("cpu_us_per_request"))]
    for flavour, title in (("openai", "OpenAI"), ("anthropic", "Anthropic")):
        stream = _get(work, "stream", flavour)
        figures += [(f"stream → {title}, first byte (short stream), p50", "ms", True,
                     _get(stream, "short_first_byte_p50_ms")),
                    (f"stream → {title}, per chunk (200 chunks over the short stream)", "µs", True,
                     _per_chunk_us(stream))]
    figures += [("/context burst, 26 count_tokens at once, median", "ms", True, _get(work, "burst", "median_ms")),
                ("RSS at idle", "MB", True, data.get("rss_idle_mb")),
                (f"RSS with {_get(work, 'memory', 'streams') or 256} concurrent streams", "MB", True,
                 _get(work, "memory", "peak_mb")),
                ("startup → first answered request, median", "s", True, data.get("startup_s"))]
    return figures


def _delta(value: float, unit: str) -> str:
    digits = {"ms": 3, "s": 3, "µs": 1, "MB": 1}.get(unit, 0)
    return f"{value:+,.{digits}f} {unit}"


def _times(variant: float | None, ccm: float | None) -> str:
    if not isinstance(variant, (int, float)) or not isinstance(ccm, (int, float)) or ccm <= 0 or variant < 0:
        return "—"
    return f"{variant / ccm:.2f}×"


def _difference(variant: float | None, ccm: float | None, unit: str) -> str:
    if not isinstance(variant, (int, float)) or not isinstance(ccm, (int, float)):
        return "—"
    return _delta(variant - ccm, unit)


ROUND_FIGURES = (  # the figures whose windows the report lists round by round: (label, unit, path, key)
    ("tiny request, p50", "ms", ("tiny",), "p50_ms"),
    ("tiny request, CPU per request", "µs", ("tiny",), "cpu_us_per_request"),
    ("real 50 KB request, p50", "ms", ("fixtures", REAL), "p50_ms"),
    ("real 50 KB request, CPU per request", "µs", ("fixtures", REAL), "cpu_us_per_request"),
    ("real request, 32 conns", "req/s", ("sweep", "32"), "rps"),
)


def round_rows(results: dict[str, Any], names: list[str]) -> list[tuple[str, str, str, list[float], float | None]]:
    """(figure, unit, target, its windows' values in the order measured, the median of the rounds' differences from
    ccm's window of the same round — None for ccm itself) for ROUND_FIGURES."""
    rows = []
    for label, unit, path, key in ROUND_FIGURES:
        values = {name: [window[key] for window in _get(results, "targets", name, "workloads", *path, "windows") or []
                         if isinstance(window, dict) and key in window] for name in names}
        if not values.get("ccm"):
            continue
        for name in names:
            if not values[name]:
                continue
            paired = [mine - theirs for mine, theirs in zip(values[name], values["ccm"], strict=False)]
            rows.append((label, unit, name, values[name],
                         None if name == "ccm" or not paired else round(statistics.median(paired), 3)))
    return rows


def comparison_block(results: dict[str, Any]) -> str:
    comparison = results.get("comparison")
    if not comparison:
        return ("No variants in this run. `make bench ARGS=\"--variants base=REV\"` measures ccm at another revision "
                "beside the checkout, `--ccm-variant 'NAME:SPEC'` the checkout with something switched on or off "
                "(bench/variants.py).")
    targets = results["targets"]
    variants = [name for name in comparison["variants"] if name in targets]
    names = ["ccm", *variants]
    out = [f"ccm and {len(variants)} variant{'s' if len(variants) != 1 else ''} of it, running side by side "
           f"against the same upstream; every workload alternated short windows between them, "
           f"{comparison['rounds']} rounds (each target's window right after the other's, the order reversed every "
           "other round), and each figure is the median over its rounds; the starts alternated too. "
           "Δ is the variant's figure minus ccm's, and `÷ ccm` the variant's over ccm's (for req/s, below 1× is "
           "slower; for everything else, above 1×).", "",
           *_header(["target", "what", "revision", "`ccm run` arguments"])]
    for name in names:
        data = targets.get(name) or {}
        variant = data.get("variant") or {}
        what = variant.get("changes") or "the checkout"
        if variant.get("label") and variant["label"] != name:
            what = f"{variant['label']}: {what}"
        revision = data.get("version") or "—"
        if variant.get("rev") and variant.get("pinned") is False:
            revision += " (its packages resolved afresh, not the checkout's versions)"
        args = variant.get("args") if variant else data.get("args")
        status = f" — unavailable: {data['error']}" if data.get("error") else ""
        out.append(f"| {name} | {what}{status} | {revision} | "
                   f"{('`' + ' '.join(args) + '`') if args else 'none'} |")
    out += ["", *_header(["metric", "ccm", *(column for name in variants
                                             for column in (name, f"{name} Δ", f"{name} ÷ ccm"))])]
    ccm_figures = comparison_figures(results, "ccm")
    variant_figures = {name: comparison_figures(results, name) for name in variants}
    for index, (label, unit, _, value) in enumerate(ccm_figures):
        cells = [_format(value, unit)]
        for name in variants:
            entries = variant_figures[name]
            theirs = entries[index][3] if index < len(entries) and entries[index][0] == label else None
            cells += [_format(theirs, unit), _difference(theirs, value, unit), _times(theirs, value)]
        if all(cell == "—" for cell in cells):
            continue
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    rows = round_rows(results, names)
    if rows:
        width = max(len(values) for *_, values, _ in rows)
        out += ["", "Round by round (each target's window, in the order measured), and the median of the rounds' "
                "differences from ccm's window of the same round:", "",
                *_header(["figure", "target", *(f"round {index + 1}" for index in range(width)), "median Δ"])]
        for label, unit, name, values, paired in rows:
            cells = [_format(value) for value in values] + [""] * (width - len(values))
            out.append(f"| {label} ({unit}) | {name} | " + " | ".join(cells) + " | "
                       + ("" if paired is None else _delta(paired, unit)) + " |")
    return "\n".join(out)


def comparison_console(results: dict[str, Any]) -> str:
    """The comparison for the console: each variant's figure beside ccm's, the difference and the ratio."""
    comparison = results.get("comparison") or {}
    lines = [f"ccm against ccm ({comparison.get('rounds')} rounds of alternating windows):"]
    ccm_figures = comparison_figures(results, "ccm")
    for name in comparison.get("variants", []):
        error = _get(results, "targets", name, "error")
        if error:
            lines.append(f"{name:8s} unavailable: {error}")
            continue
        for (label, unit, _, ccm), (_, _, _, mine) in zip(ccm_figures, comparison_figures(results, name),
                                                          strict=False):
            if mine is None and ccm is None:
                continue
            lines.append(f"{name:8s} {label:60s} {_format(mine, unit):>12s}   ccm {_format(ccm, unit):>12s}   "
                         f"Δ {_difference(mine, ccm, unit):>14s}   {_times(mine, ccm)}")
    for label, unit, name, values, paired in round_rows(results, ["ccm", *comparison.get("variants", [])]):
        lines.append(f"rounds   {label:28s} {name:8s} {', '.join(_format(value) for value in values)}"
                     + ("" if paired is None else f"   median Δ {_delta(paired, unit)}"))
    return "\n".join(lines)


SKELETON = """# Benchmarks: ccm, claude-code-router and LiteLLM, side by side

Generated by `make bench` (bench/run.py); the blocks between `bench:` markers are rewritten by every full run, the
prose around them is kept. Raw figures: [bench/results/latest.json](../bench/results/latest.json).

## Machine

<!-- bench:machine -->
<!-- /bench:machine -->

## Method

## Results

![latency and throughput](benchmarks/latency-throughput.png)

<!-- bench:results -->
<!-- /bench:results -->

## ccm against ccm

<!-- bench:variants -->
<!-- /bench:variants -->

## Profile

<!-- bench:profile -->
<!-- /bench:profile -->

## In-process benchmarks

<!-- bench:micro -->
<!-- /bench:micro -->

## What changed
"""


def fill(text: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    if not pattern.search(text):
        return text + f"\n<!-- bench:{name} -->\n{content}\n<!-- /bench:{name} -->\n"
    return pattern.sub(lambda found: f"{found.group(1)}{content}\n{found.group(2)}", text)


def write_docs(results: dict[str, Any]) -> None:
    text = DOC.read_text() if DOC.exists() else SKELETON
    text = fill(text, "machine", machine_block(results["meta"], results["summary"]))
    text = fill(text, "results", results_block(results))
    text = fill(text, "variants", comparison_block(results))
    text = fill(text, "profile", profile_block(results))
    text = fill(text, "micro", micro_block(results))
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    draw_chart(results)


def draw_chart(results: dict[str, Any]) -> None:
    """The chart is drawn by the bench venv's Python (matplotlib is not one of ccm's dependencies)."""
    python = CACHE / "venv" / "bin" / "python"
    if not python.exists():
        print(f"no chart: {python} is missing (make bench installs matplotlib there)")
        return
    CHART.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(python), "-m", "bench.chart", str(CHART)], input=json.dumps(results), text=True,
                          cwd=REPO, capture_output=True, timeout=120)
    if done.returncode != 0:
        print(f"no chart: {done.stderr.strip()[-400:]}")
