"""Render docs/grafana/ccm-dashboard.png: the Grafana dashboard's panels from a real scrape of a running ccm.

Grafana cannot be installed here, so this draws what its panels would show: a real `ccm run` (on loopback, in front
of the strict fake upstreams) serves real traffic from the anthropic SDK — streams and whole answers, scripted 529s
that fall back, 429s that are retried, an outage that opens a breaker, a reload and a rejected save — while a real
Prometheus (Debian's `prometheus` package) scrapes its /metrics every second; then each panel's PromQL, as the
dashboard JSON has it (`$__rate_interval` set to 15s), is evaluated by that Prometheus over the run and drawn with
matplotlib in the dashboard's grid.

    apt-get install prometheus       # once; matplotlib comes from the bench venv (bench/setup.sh)
    .venv/bin/python bench/render_dashboard.py [--seconds 150]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BENCH_VENV = Path.home() / ".cache" / "ccm" / "bench" / "venv"  # matplotlib, as bench/setup.sh installs it
for site in (BENCH_VENV / "lib").glob("python3*/site-packages"):
    sys.path.append(str(site))

import anthropic  # noqa: E402
import httpx  # noqa: E402

from tests.fakes import CcmServer, FakeAnthropic, FakeOpenAI, Hang, Reply, Status, free_port, serve  # noqa: E402

DASHBOARD = REPO / "docs" / "grafana" / "ccm-dashboard.json"
PICTURE = REPO / "docs" / "grafana" / "ccm-dashboard.png"
RATE_INTERVAL = "15s"
ROUTES = """
provider anthropic {
  type  anthropic
  url   env("ANTHROPIC_UPSTREAM_URL")
  key   env("ANTHROPIC_UPSTREAM_KEY")
  retry 1 backoff 50ms..100ms on 429
}
provider deepseek {
  type  openai
  url   env("OPENAI_BASE_URL")
  key   env("OPENAI_API_KEY")
  retry 0
}
model opus = anthropic/claude-opus-5-5 {
  price input 5 output 25 cache_read 0.5 cache_write 6.25
}
model coder = deepseek/deepseek-chat {
  max_output 8k
  price      input 0.27 output 1.10
}
route {
  subagent -> coder
  model ~ "*haiku*" -> coder
  default -> opus
}
fallback opus -> coder
breaker 3 failures cooldown 10s
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("prometheus is not installed (apt-get install prometheus)")
    folder = Path(tempfile.mkdtemp(prefix="ccm-dashboard-"))
    anthropic_fake, openai_fake = FakeAnthropic("sk-ant-dash"), FakeOpenAI("sk-dash")
    with serve(anthropic_fake) as (anthropic_url, _), serve(openai_fake) as (openai_url, _):
        env = {"ANTHROPIC_UPSTREAM_URL": anthropic_url, "ANTHROPIC_UPSTREAM_KEY": "sk-ant-dash",
               "OPENAI_BASE_URL": f"{openai_url}/v1", "OPENAI_API_KEY": "sk-dash"}
        with CcmServer.from_text(folder, ROUTES, env) as ccm:
            prom_port = free_port()
            config = folder / "prometheus.yml"
            config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                          "scrape_configs": [{"job_name": "ccm", "static_configs": [
                                              {"targets": [f"127.0.0.1:{ccm.port}"]}]}]}))
            server = subprocess.Popen(
                [prometheus, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=subprocess.DEVNULL, stderr=(folder / "prometheus.log").open("wb"))
            try:
                prom = f"http://127.0.0.1:{prom_port}"
                _wait(lambda: httpx.get(f"{prom}/-/ready").status_code == 200, 30)
                start = time.time()
                _traffic(ccm, anthropic_fake, openai_fake, args.seconds)
                time.sleep(3)  # the last scrapes
                end = time.time()
                _render(prom, start, end)
            finally:
                server.terminate()
                server.wait(10)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {PICTURE}")


def _traffic(ccm: CcmServer, anthropic_fake: FakeAnthropic, openai_fake: FakeOpenAI, seconds: float) -> None:
    """Four client threads for `seconds`: a quiet start, an Anthropic outage (529s: fallbacks, then the breaker
    opens), a spell of 429s (retried), a reload and a rejected save, and recovery."""
    rand = random.Random(7)
    started = time.monotonic()

    def phase() -> float:
        return (time.monotonic() - started) / seconds

    def anthropic_behaviour(exchange: Any) -> Any:
        p = phase()
        if 0.30 < p < 0.45 and rand.random() < 0.8:
            return Status(529, "Overloaded")
        if 0.60 < p < 0.70 and rand.random() < 0.3:
            return Status(429, "rate limited")
        return Hang(rand.uniform(0.05, 0.4), Reply(text="Here is the change." * rand.randint(1, 20),
                                                  pieces=rand.randint(3, 12), chunk_delay=rand.uniform(0.005, 0.03),
                                                  input_tokens=rand.randint(2, 50),
                                                  output_tokens=rand.randint(20, 900)))

    def openai_behaviour(exchange: Any) -> Any:
        if rand.random() < 0.04:  # `coder` has no fallback: the client sees these
            return Status(500, "internal error")
        return Hang(rand.uniform(0.02, 0.2), Reply(text="Done." * rand.randint(1, 10), pieces=4, chunk_delay=0.01,
                                                   input_tokens=rand.randint(500, 20000),
                                                   output_tokens=rand.randint(10, 400),
                                                   cached_tokens=rand.choice([0, 0, 256, 4096])))

    anthropic_fake.default = anthropic_behaviour
    openai_fake.default = openai_behaviour
    stop = threading.Event()

    def client_loop(seed: int) -> None:
        local = random.Random(seed)
        client = anthropic.Anthropic(base_url=ccm.url, api_key="ccm-local", max_retries=0, timeout=30)
        while not stop.is_set():
            model = local.choice(["claude-opus-5-5", "claude-opus-5-5", "claude-haiku-5-5"])
            messages: list[dict[str, Any]] = [{"role": "user", "content": "refactor this " * local.randint(1, 200)}]
            if local.random() < 0.03:
                messages = [{"role": "assistant", "content": "a conversation must start with the user"}]
            try:
                if local.random() < 0.6:
                    with client.messages.stream(model=model, max_tokens=1024, messages=messages) as stream:  # type: ignore[arg-type]
                        stream.get_final_message()
                else:
                    client.messages.create(model=model, max_tokens=1024, messages=messages)  # type: ignore[arg-type]
            except anthropic.APIError:
                pass
            time.sleep(local.uniform(0.05, 0.3))

    threads = [threading.Thread(target=client_loop, args=(seed,), daemon=True) for seed in range(4)]
    for thread in threads:
        thread.start()
    reloaded = rejected = False
    while phase() < 1:
        if phase() > 0.5 and not reloaded:
            ccm.route_file.write_text(ROUTES + "\n# reloaded\n")
            reloaded = True
        if phase() > 0.75 and not rejected:
            ccm.route_file.write_text(ROUTES + "\nroute {\n")  # a broken save: rejected, the table keeps serving
            time.sleep(1)
            ccm.route_file.write_text(ROUTES)
            rejected = True
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(35)


def _render(prom: str, start: float, end: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.style.use("dark_background")
    figure = plt.figure(figsize=(18, rows * 0.62), facecolor="#111217")
    grid = figure.add_gridspec(rows, 24, hspace=0.9, wspace=0.5, top=0.975, bottom=0.02, left=0.04, right=0.99)
    colours = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"]
    for panel in panels:
        pos = panel["gridPos"]
        axes = figure.add_subplot(grid[pos["y"]:pos["y"] + pos["h"] - 1, pos["x"]:pos["x"] + pos["w"]])
        axes.set_facecolor("#181b1f")
        axes.set_title(panel["title"], loc="left", fontsize=11, color="#ccccdc")
        unit = panel["fieldConfig"]["defaults"]["unit"]
        index = 0
        for target in panel["targets"]:
            query = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            result = httpx.get(f"{prom}/api/v1/query_range", params={
                "query": query, "start": start, "end": end, "step": "2s"}, timeout=30).json()
            for series in result["data"]["result"]:
                label = target["legendFormat"]
                for name, value in series["metric"].items():
                    label = label.replace("{{" + name + "}}", value)
                times = [datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                if unit == "s":
                    values = [v * 1000 for v in values]
                colour = colours[index % len(colours)]
                index += 1
                if panel["type"] == "state-timeline":
                    axes.step(times, [v + index * 0.05 for v in values], where="post", label=label, color=colour)
                else:
                    axes.plot(times, values, label=label, color=colour, linewidth=1.3)
                    axes.fill_between(times, values, alpha=0.08, color=colour)
        if panel["type"] == "state-timeline":
            axes.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
        axes.set_ylabel({"s": "ms", "reqps": "req/s", "currencyUSD": "USD/h"}.get(unit, ""), fontsize=8)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        axes.tick_params(labelsize=7, colors="#9fa7b3")
        axes.grid(color="#2c3235", linewidth=0.6)
        for spine in axes.spines.values():
            spine.set_color("#2c3235")
        if index:
            axes.legend(fontsize=7, loc="upper left", framealpha=0.3, ncol=2)
        else:
            axes.text(0.5, 0.5, "No data", ha="center", va="center", color="#9fa7b3", transform=axes.transAxes)
    figure.suptitle("ccm — the Grafana dashboard's panels (docs/grafana/ccm-dashboard.json), evaluated by Prometheus "
                    "on a real run; rendered with matplotlib, not Grafana", fontsize=12, color="#ccccdc", y=0.992)
    figure.savefig(PICTURE, dpi=80, facecolor=figure.get_facecolor(), bbox_inches="tight")


def _wait(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("prometheus did not become ready")


if __name__ == "__main__":
    main()
