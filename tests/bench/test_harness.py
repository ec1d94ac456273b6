"""A tiny run of the benchmark harness, so that `make bench` keeps working between its runs by hand: the harness's own
Python load generator drives a real `ccm run` and the harness's Python upstream for a handful of requests per
workload (no nginx, wrk, npm or LiteLLM needed), and the report is built from what it measured."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bench import loadgen, paced, report
from bench.profile import summarise
from bench.targets import ANTHROPIC, DEFAULT, OPENAI_STREAM, TINY, Ccm, Upstream, ccm_routes
from bench.upstream import STREAM_CHUNKS, nginx_config, openai_stream, serve_python
from bench.workloads import REAL_REQUEST, Plan, run_all, with_model

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


async def test_paced_streams_are_timed_through_ccm_a_relay_and_straight() -> None:
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
