"""The chart of docs/benchmarks.md: p50 latency per workload (log scale) and throughput across the concurrency
sweep, one colour per target. Runs in the bench venv, where matplotlib is installed:

    python -m bench.chart OUT.png  < results.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {"upstream": "upstream alone (nginx)", "ccm": "ccm", "ccr": "claude-code-router", "litellm": "LiteLLM"}
COLOURS = {"upstream": "#9e9e9e", "ccm": "#1f77b4", "ccr": "#ff7f0e", "litellm": "#2ca02c"}
REAL = "bash-tool-result-turn2"


def latency_bars(axes: Any, targets: dict[str, Any]) -> None:
    workloads = [("tiny request", ("tiny", "p50_ms")), ("50 KB → OpenAI", ("fixtures", REAL, "p50_ms")),
                 ("50 KB → Anthropic", ("passthrough", REAL, "p50_ms")),
                 ("stream → OpenAI\n(200 chunks)", ("stream", "openai", "total_p50_ms"))]
    present = [name for name in NAMES if targets.get(name, {}).get("workloads")]
    width = 0.8 / max(len(present), 1)
    for index, name in enumerate(present):
        values = []
        for _, path in workloads:
            value: Any = targets[name]["workloads"]
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value if isinstance(value, (int, float)) else 0)
        positions = [slot + index * width for slot in range(len(workloads))]
        bars = axes.bar(positions, values, width, label=NAMES[name], color=COLOURS[name])
        axes.bar_label(bars, labels=[f"{v:.2f}" if 0 < v < 10 else f"{v:.0f}" if v else "" for v in values],
                       fontsize=6, rotation=90, padding=2)
    axes.set_xticks([slot + width * (len(present) - 1) / 2 for slot in range(len(workloads))],
                    [label for label, _ in workloads], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("p50 latency, ms (log)")
    axes.set_title("Latency, 1 connection (lower is better)")
    axes.legend(fontsize=7)


def throughput_lines(axes: Any, targets: dict[str, Any]) -> None:
    for name in NAMES:
        sweep = targets.get(name, {}).get("workloads", {}).get("sweep") or {}
        points = [(int(level), entry["rps"]) for level, entry in sweep.items() if "rps" in entry and entry["rps"] > 0]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=NAMES[name], color=COLOURS[name])
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("connections")
    axes.set_ylabel("requests/s (log)")
    axes.set_title("Throughput, real 50 KB request → OpenAI (higher is better)")
    axes.legend(fontsize=7)


def main() -> None:
    results = json.load(sys.stdin)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    latency_bars(left, results["targets"])
    throughput_lines(right, results["targets"])
    figure.suptitle(f"ccm vs claude-code-router vs LiteLLM — {results['meta']['date']}, {results['meta']['nproc']} "
                    "cores, one loopback nginx upstream", fontsize=10)
    figure.tight_layout()
    figure.savefig(sys.argv[1], dpi=110)


if __name__ == "__main__":
    main()
