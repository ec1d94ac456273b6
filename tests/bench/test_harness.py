"""A tiny run of the benchmark harness, so that `make bench` keeps working between its runs by hand: the harness's own
Python load generator drives a real `ccm run` and the harness's Python upstream for a handful of requests per
workload (no nginx, wrk, npm or LiteLLM needed), and the report is built from what it measured."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bench import loadgen, paced, report
from bench import run as bench_run
from bench.profile import summarise
from bench.targets import ANTHROPIC, DEFAULT, OPENAI_STREAM, TINY, Ccm, Target, Upstream, ccm_routes
from bench.upstream import STREAM_CHUNKS, nginx_config, openai_stream, serve_python
from bench.variants import (
    READY,
    VariantError,
    VariantSpec,
    check_names,
    expand,
    parse_spec,
    parse_variants,
    prepare_tree,
    run_command,
    variant_targets,
)
from bench.workloads import (
    REAL_REQUEST,
    Plan,
    Shape,
    Workload,
    combine_windows,
    measure_workload,
    run_all,
    run_group,
    schedule,
    with_model,
)

SMOKE = Plan(seconds=0.3, fixture_seconds=0.2, stream_seconds=0.2, burst_rounds=1, streams=4, connections=(1, 4),
             fixtures=(REAL_REQUEST,), use_wrk=False)
REAL = Path(REAL_REQUEST).stem


def errors_in(value: Any, path: str = "") -> list[str]:
    """Every `error` recorded anywhere in a result tree, with where it was."""
    if isinstance(value, dict):
        found = [f"{path}: {value['error']}"] if "error" in value else []
        return found + [error for key, item in value.items() for error in errors_in(item, f"{path}/{key}")]
    return []


async def test_every_workload_runs_through_ccm_and_the_upstream_alone(tmp_path: Path) -> None:
    async with serve_python() as upstream_url:
        direct = Upstream("upstream", "python upstream", tmp_path / "upstream")
        direct.port = int(upstream_url.rsplit(":", 1)[1])  # served in this process: nothing to start
        ccm = Ccm("ccm", "ccm", tmp_path / "ccm", upstream_url=upstream_url)
        names = ("tiny", "fixtures", "passthrough", "stream", "burst", "sweep", "memory")
        results: dict[str, Any] = {"targets": {"upstream": {"workloads": await run_all(direct, names, SMOKE)}}}
        await ccm.start(timeout=30)
        try:
            assert 0 < ccm.startup_s < 30
            assert ccm.rss_mb() > 10
            work = await run_all(ccm, names, SMOKE)
            results["targets"]["ccm"] = {"workloads": work, "startup_s": ccm.startup_s, "rss_idle_mb": 50.0}
        finally:
            ccm.stop()
        assert ccm.process is not None and ccm.process.poll() is not None, "the harness stops what it starts"

    assert errors_in(results) == []
    assert work["tiny"]["p50_ms"] > 0 and work["tiny"]["errors"] == 0
    assert work["fixtures"][REAL]["p50_ms"] > 0 and work["passthrough"][REAL]["p50_ms"] > 0
    assert set(work["sweep"]) == {"1", "4"} and all(level["rps"] > 0 for level in work["sweep"].values())
    assert work["stream"]["openai"]["samples"] >= 1 and work["stream"]["anthropic"]["short_samples"] >= 1
    assert work["burst"]["requests"] == 26
    assert work["memory"]["completed"] == SMOKE.streams

    results["meta"] = {"date": "today", "nproc": 2, "cpu": "cpu", "memory_gb": 1.0, "kernel": "k",
                       "loadavg_start": 0.0, "loadavg_end": 0.0, "python": "py", "node": "node", "nginx": "nginx",
                       "wrk": "wrk", "loadgen": "python", "ccm_packages": "", "seconds": 1, "argv": []}
    results["summary"] = summary = report.headline(results)
    assert summary["ccm"]["tiny_added_ms"] is not None
    assert summary["ccm"]["real_added_ms"] is not None
    assert summary["ccm"]["stream_chunk_added_us"] is not None
    table = report.results_block(results)
    assert "tiny request, added p50" in table and "ccm" in table
    assert "ccm" in report.console_table(summary, None)


async def test_the_routers_see_the_same_routes_as_the_upstream_serves() -> None:
    """Each bench model name reaches its own upstream path: the stream model answers a stream, the passthrough
    model an Anthropic message, any Claude model the translated completion."""
    async with serve_python() as upstream_url:
        for route, expected in ((DEFAULT, b'"chat.completion"'), (ANTHROPIC, b'"type":"message"'),
                                (OPENAI_STREAM, b'"chat.completion.chunk"')):
            answer = await loadgen.fetch(upstream_url + route.endpoint, TINY)
            assert answer.status == 200 and expected in answer.body
    routes = ccm_routes("http://127.0.0.1:1")
    assert f'model == "{OPENAI_STREAM.model}" -> openai_stream' in routes
    assert "default -> openai" in routes


def test_the_load_generator_reads_chunked_bodies_split_anywhere() -> None:
    body = openai_stream()
    pieces = [body[index:index + 7] for index in range(0, len(body), 7)]
    chunked = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces) + b"0\r\n\r\n"

    async def read() -> bytes:
        reader = asyncio.StreamReader()
        for offset in range(0, len(chunked), 5):  # arrives in 5-byte reads: sizes and CRLFs split everywhere
            reader.feed_data(chunked[offset:offset + 5])
        reader.feed_eof()
        data, _ = await loadgen._read_chunked(reader)
        return data

    assert asyncio.run(read()) == body
    assert body.count(b"data: ") == STREAM_CHUNKS + 1  # 200 chunks and [DONE]


def test_nginx_config_serves_every_canned_path(tmp_path: Path) -> None:
    config = nginx_config(tmp_path, 18080).read_text()
    for path in ("/openai/v1/chat/completions", "/openai-stream/v1/chat/completions",
                 "/anthropic-stream-short/v1/messages", "/anthropic/v1/messages/count_tokens"):
        assert f"location = {path} " in config
    assert "limit_rate" in config and "listen 127.0.0.1:18080" in config
    assert (tmp_path / "files" / "openai-stream" / "v1" / "chat" / "completions").read_bytes() == openai_stream()


def test_profile_summary_counts_microseconds_per_request() -> None:
    stacks = "\n".join([
        "serve (/x/ccm/core/server.py:10);_messages (/x/ccm/core/app.py:20);parse_request (/x/ccm/validate.py:5) 50",
        "serve (/x/ccm/core/server.py:10);send (httpx/_client.py:3) 30",
        "run (asyncio/runners.py:1) 20",
    ])
    result = summarise(stacks, requests=100, rate=1000)
    assert result["samples"] == 100
    assert result["cpu_us_per_request"] == 1000.0  # 100 samples at 1 kHz = 0.1 s, over 100 requests
    assert result["by_package"][0] == {"package": "ccm (route, validate, sse, tokens)", "us": 500.0, "share": 0.5}
    # the server's frame sits under every sample: the inclusive table starts below it
    assert {entry["function"]: entry["us"] for entry in result["inclusive"]} == {
        "ccm/core/app.py:_messages": 500.0, "ccm/validate.py:parse_request": 500.0}


def test_docs_keep_their_prose_when_blocks_are_refilled() -> None:
    text = "intro\n<!-- bench:results -->\nold\n<!-- /bench:results -->\nprose after\n"
    filled = report.fill(text, "results", "new table")
    assert filled == "intro\n<!-- bench:results -->\nnew table\n<!-- /bench:results -->\nprose after\n"
    assert "<!-- bench:profile -->\nx\n<!-- /bench:profile -->" in report.fill(text, "profile", "x")


@pytest.mark.parametrize("stream", [True, False])
def test_with_model_sets_model_and_stream(stream: bool) -> None:
    body = json.loads(with_model(TINY, OPENAI_STREAM.model, stream=stream))
    assert body["model"] == OPENAI_STREAM.model and body["stream"] is stream


async def test_paced_streams_are_timed_through_ccm_a_relay_and_straight(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # `ccm run` opens the default ledger: one of this test's own, not the one under the user's home (as CcmServer)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    figures = await paced.measure(streams=1, gap=0.0005)
    assert set(figures) == {"cpu_us", "through_us", "straight_us", "relay_us"}
    assert all(value > 0 for value in figures.values()), figures
    # what `make bench` reads back from the printed line
    found = {key: [value] for key, value in figures.items()}
    line = paced.summary_line("this tree", found)
    parsed = paced.parse_summary(f"noise\n{line}\n(1.0 s)")
    assert parsed["added_us"] == round(found["through_us"][0] - found["straight_us"][0])
    assert parsed["relay_us"] == round(found["relay_us"][0] - found["straight_us"][0])
    assert parsed["median_us"] == round(found["cpu_us"][0])


# ---------------------------------------------------------------------------------------------------------------
# ccm against ccm: variants, the worktree set-up, the interleaving scheduler and the report's section


def test_variant_specs_parse_into_revisions_arguments_environment_and_route_text(tmp_path: Path) -> None:
    extra = tmp_path / "ledger.ccm"
    extra.write_text("settings {\n  ledger on\n}\n")
    spec = parse_spec(f"ledger:args=--db sqlite:///{{workdir}}/ccm.db --log-level 'warning';env=CCM_X=1;"
                      f"env=CCM_Y=a=b;routes=@{extra};setup=ccm db upgrade;label=ledger on")
    assert spec == VariantSpec("ledger", args=("--db", "sqlite:///{workdir}/ccm.db", "--log-level", "warning"),
                               env=(("CCM_X", "1"), ("CCM_Y", "a=b")), routes="settings {\n  ledger on\n}\n",
                               setup=("ccm", "db", "upgrade"), label="ledger on")
    assert parse_spec("base:rev=04f803c") == VariantSpec("base", rev="04f803c")
    assert parse_spec("same:") == VariantSpec("same")  # the checkout again: an A/A run
    assert parse_spec("m:routes=a\\nb").routes == "a\nb"
    own = parse_spec("ledger:inherit=no")
    assert not own.inherit and own.describe() == "without ccm's --ccm-arg"
    assert variant_targets([own], Path("/runs"), "http://u", ccm_args=["--no-ledger"])[0].extra_args == []
    assert variant_targets([VariantSpec("m", args=("--metrics",))], Path("/runs"), "http://u",
                           ccm_args=["--no-metrics"])[0].command(Path("r.ccm"))[-2:] == ["--no-metrics", "--metrics"]
    assert parse_variants("base=04f803c, old=HEAD~3") == [VariantSpec("base", rev="04f803c"),
                                                          VariantSpec("old", rev="HEAD~3")]
    assert expand("sqlite:///{workdir}/ccm.db {x}", Path("/w"), Path("/t")) == "sqlite:////w/ccm.db {x}"
    for wrong in ("ledger", "ledger:db=x", "ledger:env=1X=2", "ccm:args=-v", "a b:args=-v", "x:args='open",
                  "x:rev=a;rev=b", "x:inherit=maybe", f"x:routes=@{tmp_path / 'missing.ccm'}"):
        with pytest.raises(VariantError):
            parse_spec(wrong)
    for wrong in ("base", "base=", "upstream=HEAD"):
        with pytest.raises(VariantError):
            parse_variants(wrong)
    with pytest.raises(VariantError, match="two variants"):
        check_names([VariantSpec("a"), VariantSpec("a", rev="HEAD")])


def test_bench_run_refuses_variants_without_the_ccm_target() -> None:
    with pytest.raises(SystemExit, match="add ccm"):
        bench_run.parse(["--variants", "base=HEAD", "--targets", "ccr"])
    options = bench_run.parse(["--variants", "base=HEAD", "--ccm-variant", "q:args=--log-level warning"])
    assert [spec.name for spec in options.variant_specs] == ["base", "q"]


def _git(*words: str, cwd: Path) -> str:
    environ = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *words], cwd=cwd, env=environ, check=True, capture_output=True,
                          text=True).stdout.strip()


class FakeInstaller:
    """Runs git for real; stands in for `python -m venv`, pip and the import check (no network, no install)."""

    def __init__(self, pinned_fails: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.pinned_fails = pinned_fails

    def __call__(self, command: Sequence[str], cwd: Path | None = None) -> str:
        command = list(command)
        if command[0] == "git":
            return run_command(command, cwd)
        self.calls.append(command)
        if command[1:3] == ["-m", "venv"]:
            (Path(command[3]) / "bin").mkdir(parents=True)
            (Path(command[3]) / "bin" / "python").write_text("")
        elif command[1:4] == ["-m", "pip", "freeze"]:
            return "httpx==0.28.1\nccm @ file:///somewhere\nuvicorn==0.54.0\n"
        elif command[1:4] == ["-m", "pip", "install"] and "-c" in command and self.pinned_fails:
            raise VariantError("no matching distribution")
        elif command[1] == "-c":  # where the venv imports ccm from: the tree it was made for
            return str(Path(command[0]).parent.parent.parent / "ccm" / "__init__.py") + "\n"
        return ""

    def installs(self) -> list[list[str]]:
        return [call for call in self.calls if call[1:4] == ["-m", "pip", "install"]]


def test_a_revision_gets_a_worktree_and_venv_of_its_own_made_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "ccm").mkdir(parents=True)
    _git("init", "-q", cwd=tmp_path / "repo")
    (repo / "ccm" / "__init__.py").write_text("VERSION = 1\n")
    _git("add", ".", cwd=repo)
    _git("commit", "-q", "-m", "one", cwd=repo)
    first = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "ccm" / "__init__.py").write_text("VERSION = 2\n")
    _git("commit", "-q", "-am", "two", cwd=repo)
    trees, base = tmp_path / "cache" / "trees", tmp_path / "base-python"
    runner = FakeInstaller()

    tree = prepare_tree("HEAD~1", repo=repo, trees=trees, base_python=base, run=runner)
    assert tree.commit == first and tree.folder == trees / first[:12] and not tree.reused and tree.pinned
    assert (tree.folder / "ccm" / "__init__.py").read_text() == "VERSION = 1\n"  # that revision's code
    assert tree.python == tree.folder / ".venv" / "bin" / "python"
    assert runner.calls[0] == [str(base), "-m", "venv", str(tree.folder / ".venv")]
    [install] = runner.installs()
    assert install[-4:] == ["-e", str(tree.folder), "-c", str(tree.folder / ".venv" / "pins.txt")]
    assert (tree.folder / ".venv" / "pins.txt").read_text() == "httpx==0.28.1\nuvicorn==0.54.0\n"

    again = prepare_tree(first, repo=repo, trees=trees, base_python=base, run=runner)
    assert again.reused and again.folder == tree.folder and len(runner.installs()) == 1

    (tree.folder / ".venv" / READY).unlink()  # a run stopped mid-install: made again
    unpinned = FakeInstaller(pinned_fails=True)
    remade = prepare_tree(first, repo=repo, trees=trees, base_python=base, run=unpinned)
    assert not remade.reused and not remade.pinned
    assert [call[-2:] for call in unpinned.installs()] == [["-c", str(tree.folder / ".venv" / "pins.txt")],
                                                           ["-e", str(tree.folder)]]
    assert prepare_tree(first, repo=repo, trees=trees, base_python=base, run=runner).pinned is False

    with pytest.raises(VariantError, match="no commit"):
        prepare_tree("no-such-rev", repo=repo, trees=trees, base_python=base, run=runner)


def _shape(name: str, log: list[tuple[str, str]], fail_for: str = "", rounds: int = 1,
           fixed: bool = False) -> Shape:
    async def window(target: Target, seconds: float) -> dict[str, Any]:
        log.append((name, target.name))
        if target.name == fail_for:
            raise RuntimeError("refused")
        return {"p50_ms": float(len(log)), "requests": 10, "seconds": seconds}

    return Shape(name, window, combine_windows, seconds=1.2, rounds=rounds, fixed=fixed)


def test_the_scheduler_alternates_targets_window_by_window_and_reverses_every_other_round() -> None:
    log: list[tuple[str, str]] = []
    shapes = [_shape("a", log), _shape("b", log), _shape("burst", log, rounds=2, fixed=True)]
    order = [(round_, shape.name, target) for round_, shape, target in schedule(["ccm", "v"], shapes, compared=3)]
    assert order == [(0, "a", "ccm"), (0, "a", "v"), (0, "b", "ccm"), (0, "b", "v"), (0, "burst", "ccm"),
                     (0, "burst", "v"),
                     (1, "a", "v"), (1, "a", "ccm"), (1, "b", "v"), (1, "b", "ccm"), (1, "burst", "v"),
                     (1, "burst", "ccm"),
                     (2, "a", "ccm"), (2, "a", "v"), (2, "b", "ccm"), (2, "b", "v")]
    alone = schedule(["ccm"], shapes, compared=None)
    assert [(round_, shape.name) for round_, shape, _ in alone] == [(0, "a"), (0, "b"), (0, "burst"), (1, "burst")]
    assert shapes[0].window_seconds(shapes[0].rounds_for(3)) == pytest.approx(0.4)
    assert Shape("w", shapes[0].window, combine_windows, seconds=1.2, min_window=1.0).window_seconds(3) == 1.0


class Quiet(Target):
    """A target with nothing to start, for the scheduler's tests."""

    def version(self) -> str:
        return "0"

    def launch(self) -> tuple[list[str], dict[str, str]]:
        return [], {}


async def test_a_compared_workload_keeps_each_window_and_reports_medians_and_failures() -> None:
    log: list[tuple[str, str]] = []
    workload = Workload("w", [_shape("a", log), _shape("b", log, fail_for="v")], dict)
    ccm, variant = Quiet("ccm", "ccm", Path("/nonexistent")), Quiet("v", "v", Path("/nonexistent"))
    results = await measure_workload(workload, [ccm, variant], compared=3)
    assert log[:4] == [("a", "ccm"), ("a", "v"), ("b", "ccm"), ("b", "v")]  # v's b failed once: skipped since
    assert log[4:] == [("a", "v"), ("a", "ccm"), ("b", "ccm"), ("a", "ccm"), ("a", "v"), ("b", "ccm")]
    mine = results["ccm"]["a"]
    assert [window["p50_ms"] for window in mine["windows"]] == [1.0, 6.0, 8.0]
    assert mine["p50_ms"] == 6.0 and mine["requests"] == 30 and mine["rounds"] == 3
    assert results["v"]["b"] == {"error": "RuntimeError: refused"} and results["v"]["a"]["rounds"] == 3
    # a target measured alone: one window, its figures as they are
    alone = await measure_workload(Workload("w", [_shape("a", [])], dict), [ccm], compared=None)
    assert alone["ccm"]["a"] == {"p50_ms": 1.0, "requests": 10, "seconds": 1.2}


def _compared_results() -> dict[str, Any]:
    def work(p50s: list[float], rps: list[float], real: float) -> dict[str, Any]:
        tiny = {"p50_ms": sorted(p50s)[1], "p99_ms": 2.0, "cpu_us_per_request": 400.0, "rounds": 3,
                "windows": [{"p50_ms": value, "cpu_us_per_request": 400.0} for value in p50s]}
        sweep = {"32": {"rps": sorted(rps)[1], "p50_ms": 30.0, "rounds": 3,
                        "windows": [{"rps": value} for value in rps]}}
        return {"tiny": tiny, "fixtures": {REAL: {"bytes": 50_000, "p50_ms": real}}, "sweep": sweep}

    return {"targets": {
        "upstream": {"workloads": {"tiny": {"p50_ms": 0.05}}},
        "ccm": {"version": "9195fd5", "args": [], "startup_s": 0.7, "rss_idle_mb": 51.0,
                "workloads": work([0.5, 0.6, 0.4], [900, 1000, 950], 0.9)},
        "base": {"version": "04f803c", "startup_s": 0.8, "rss_idle_mb": 50.0,
                 "variant": {"label": "base", "changes": "revision 04f803c", "rev": "04f803c", "pinned": True,
                             "args": []},
                 "workloads": work([0.55, 0.65, 0.45], [800, 900, 850], 1.0)},
        "ledger": {"error": "ccm (ledger) exited with status 2 at start", "label": "ccm (ledger)",
                   "variant": {"label": "ledger", "changes": "`--db x`", "args": ["--db", "x"]}},
    }, "comparison": {"against": "ccm", "rounds": 3, "variants": ["base", "ledger"]}}


def test_the_report_puts_each_variant_beside_ccm_with_the_difference_and_the_ratio() -> None:
    results = _compared_results()
    results["summary"] = report.headline(results)
    block = report.comparison_block(results)
    assert "3 rounds" in block
    assert "| base | revision 04f803c | 04f803c | none |" in block
    assert "| ledger | `--db x` — unavailable: ccm (ledger) exited with status 2 at start | — | `--db x` |" in block
    assert "| tiny request, 1 conn, p50 | 0.5 ms | 0.55 ms | +0.050 ms | 1.10× |" in block
    assert "| real request, 32 conns, req/s | 950 req/s | 850 req/s | -100 req/s | 0.89× |" in block
    assert "| tiny request, p50 (ms) | base | 0.55 | 0.65 | 0.45 | +0.050 ms |" in block  # paired by round
    assert "| startup → first answered request, median | 0.7 s | 0.8 s | +0.100 s | 1.14× |" in block
    assert "base" in report.comparison_console(results) and "unavailable" in report.comparison_console(results)
    filled = report.fill(report.SKELETON, "variants", block)
    assert "## ccm against ccm\n\n<!-- bench:variants -->\nccm and 2 variants" in filled
    assert "No variants in this run" in report.comparison_block({"targets": {}})


async def test_ccm_and_a_variant_run_side_by_side_in_alternating_windows(tmp_path: Path) -> None:
    """A variant of the checkout (more arguments, environment, route-file text and a set-up command) started beside
    ccm; the tiny request alternates between them for two rounds."""
    spec = parse_spec("quiet:args=--log-level warning;env=BENCH_VARIANT={workdir};"
                      "routes=# a variant's line\\n# and another;setup=touch {workdir}/set-up")
    plan = Plan(**{**SMOKE.__dict__, "rounds": 2})
    async with serve_python() as upstream_url:
        ccm = Ccm("ccm", "ccm", tmp_path / "ccm", upstream_url=upstream_url)
        [variant] = variant_targets([spec], tmp_path, upstream_url, ccm_args=[])
        try:
            await ccm.start(timeout=30)
            await variant.start(timeout=30)
            measured = await run_group([ccm, variant], ("tiny",), plan, compared=plan.rounds)
        finally:
            ccm.stop()
            variant.stop()
    assert (tmp_path / "quiet" / "set-up").exists()
    routes = (tmp_path / "quiet" / "routes" / "routes.ccm").read_text()
    assert routes.startswith(ccm_routes(upstream_url)) and routes.endswith("# a variant's line\n# and another\n")
    assert variant.command(Path("r.ccm"))[-2:] == ["--log-level", "warning"]
    assert variant.environment()["BENCH_VARIANT"] == str(tmp_path / "quiet")
    assert variant.environment()["XDG_DATA_HOME"] == str(tmp_path / "quiet" / "data")
    for name in ("ccm", "quiet"):
        tiny = measured[name]["tiny"]
        assert "error" not in tiny and tiny["rounds"] == 2 and len(tiny["windows"]) == 2
        assert tiny["p50_ms"] > 0 and tiny["cpu_us_per_request"] > 0
    assert variant.describe()["args"] == ["--log-level", "warning"]
