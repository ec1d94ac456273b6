"""`/metrics` of a real `ccm run` after real traffic (the anthropic SDK → ccm → the strict FakeOpenAI): names,
label sets, bucket boundaries and counts, in one process and under `--workers 2` (prometheus_client's
multiprocess mode: whichever worker answers the scrape, it adds up every worker's counts)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ccm.metrics import DURATION_BUCKETS, ERROR_TYPES, OVERHEAD_BUCKETS, TOKEN_BUCKETS, TTFT_BUCKETS
from tests.fakes import CcmServer, FakeOpenAI, Reply, Status, serve

KEY = "sk-metrics-openai"
ROUTES = """
provider primary {
  type  openai
  url   env("OPENAI_BASE_URL")
  key   env("OPENAI_API_KEY")
  retry 1 backoff 10ms..20ms on 5xx
}
provider backup {
  type  openai
  url   env("OPENAI_BASE_URL")
  key   env("OPENAI_API_KEY")
  retry 0
}
model main = primary/gpt-fake {
  max_output 8k
  price input 3 output 15 cache_read 0.3 cache_write_5m 3.75
}
model spare = backup/gpt-spare {
  max_output 8k
  price input 1 output 5
}
route {
  model ~ "*haiku*" -> spare
  default -> main
}
fallback main -> spare
"""
SESSION = "438f2556-0f1f-499d-90cb-ac5e6d7acc43"
USER_ID = f'{{"device_id":"0000","account_uuid":"","session_id":"{SESSION}"}}'
GENAI = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model"}


def scrape(url: str, **headers: str) -> dict[str, list[Sample]]:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(s.value for s in samples.get(name, []) if labels.items() <= s.labels.items())


def traffic(url: str, fake: FakeOpenAI) -> None:
    """Requests whose metrics the tests know exactly."""
    client = anthropic.Anthropic(base_url=url, api_key="ccm-local", max_retries=0, timeout=30)
    hi = [{"role": "user", "content": "hi"}]
    metadata = {"user_id": USER_ID}
    # 1. main, not streamed: 21 in, 9 out
    client.messages.create(model="claude-opus-5-5", max_tokens=64, messages=hi, metadata=metadata)  # type: ignore[arg-type]
    # 2. main, streamed, 30 prompt tokens of which 10 cached
    fake.script(Reply(text="streamed", input_tokens=30, output_tokens=5, cached_tokens=10))
    with client.messages.stream(model="claude-opus-5-5", max_tokens=64, messages=hi) as stream:  # type: ignore[arg-type]
        stream.get_final_message()
    # 3. main fails twice (one retry), then the fallback answers: 21 in, 9 out on spare
    fake.script(Status(500), Status(500))
    client.messages.create(model="claude-opus-5-5", max_tokens=64, messages=hi)  # type: ignore[arg-type]
    # 4. a model the client invents on a declared provider: served, but never a label
    client.messages.create(model="primary/invented-by-client-42", max_tokens=64, messages=hi)  # type: ignore[arg-type]
    # 5. not JSON: refused by ccm
    bad = httpx.post(f"{url}/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    # 6. count_tokens
    client.messages.count_tokens(model="claude-opus-5-5", messages=hi)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeOpenAI]]:
    with serve(FakeOpenAI(KEY)) as served:
        yield served


def start(folder: Path, upstream_url: str, *args: str, **env: str) -> CcmServer:
    environ = {"OPENAI_BASE_URL": f"{upstream_url}/v1", "OPENAI_API_KEY": KEY, **env}
    return CcmServer.from_text(folder, ROUTES, environ, args=args)


def test_metrics_after_real_traffic(tmp_path: Path, upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = upstream
    fake.reset()
    with start(tmp_path, url) as ccm:
        traffic(ccm.url, fake)
        samples = scrape(ccm.url)
        text = httpx.get(f"{ccm.url}/metrics").text
    assert fake.rejections == []

    # the GenAI names, their label sets and the conventions' buckets
    tokens = samples["gen_ai_client_token_usage_bucket"]
    assert {frozenset(s.labels) for s in tokens} == {frozenset(GENAI | {"gen_ai_token_type", "le"})}
    assert _buckets(tokens) == TOKEN_BUCKETS
    assert _buckets(samples["gen_ai_client_operation_duration_seconds_bucket"]) == DURATION_BUCKETS
    assert _buckets(samples["gen_ai_server_time_to_first_token_seconds_bucket"]) == TTFT_BUCKETS
    assert _buckets(samples["ccm_overhead_seconds_bucket"]) == OVERHEAD_BUCKETS
    assert {s.labels["gen_ai_token_type"] for s in tokens} == {"input", "output", "cache_read"}
    assert {s.labels["gen_ai_provider_name"] for s in tokens} == {"openai"}
    assert {s.labels["gen_ai_operation_name"] for s in tokens} == {"chat"}
    assert {s.labels["gen_ai_request_model"] for s in tokens} == {"main", "spare", "_OTHER"}
    assert {s.labels["gen_ai_response_model"] for s in tokens} == {"gpt-fake", "gpt-spare", "_OTHER"}

    # tokens: input counts the cached ones too; cache_read is the part read from the cache
    count = "gen_ai_client_token_usage_count"
    total = "gen_ai_client_token_usage_sum"
    assert value(samples, count, gen_ai_request_model="main", gen_ai_token_type="input") == 2
    assert value(samples, total, gen_ai_request_model="main", gen_ai_token_type="input") == 21 + 30
    assert value(samples, total, gen_ai_request_model="main", gen_ai_token_type="output") == 9 + 5
    assert value(samples, total, gen_ai_request_model="main", gen_ai_token_type="cache_read") == 10
    assert value(samples, total, gen_ai_request_model="spare", gen_ai_token_type="input") == 21

    # durations: every routed Messages request once; the time to first token for the stream only
    assert value(samples, "gen_ai_client_operation_duration_seconds_count") == 4
    assert value(samples, "gen_ai_server_time_to_first_token_seconds_count") == 1
    assert value(samples, "ccm_overhead_seconds_count") == 3  # the three answered at their first attempt

    # requests by endpoint, rule, model, provider, status class and error type
    requests = "ccm_requests_total"
    assert value(samples, requests, endpoint="messages", model="main", status_class="2xx") == 2
    assert value(samples, requests, endpoint="messages", model="spare", provider="backup", rule="default") == 1
    assert value(samples, requests, endpoint="messages", model="_OTHER", provider="primary") == 1
    assert value(samples, requests, endpoint="messages", status_class="4xx",
                 error_type="caller_invalid_request") == 1
    assert value(samples, requests, endpoint="count_tokens") == 1
    assert {s.labels["error_type"] for s in samples[requests]} <= set(ERROR_TYPES) | {""}

    # retries, fallbacks, attempts
    assert value(samples, "ccm_retries_total", provider="primary", model="main") == 1
    assert value(samples, "ccm_fallbacks_total", from_model="main", to_model="spare") == 1
    assert value(samples, "ccm_upstream_attempts_total", provider="primary", result="5xx") == 2
    assert value(samples, "ccm_upstream_attempts_total", result="ok") == 4

    # cost: the route file's prices × the usage, exact until exposition
    main = Decimal(21 * 3 + 9 * 15 + 20 * 3 + 10 * Decimal("0.3") + 5 * 15) / 1_000_000
    spare = Decimal(21 * 1 + 9 * 5) / 1_000_000
    assert value(samples, "ccm_cost_usd_total", key="local", model="main") == float(main)
    assert value(samples, "ccm_cost_usd_total", key="local", model="spare") == float(spare)

    # read at scrape time: breakers (closed: the failures were not enough to open), in-flight, reloads
    assert value(samples, "ccm_breaker_state", provider="primary", upstream_model="gpt-fake") == 0
    assert {(s.labels["provider"], s.labels["upstream_model"]) for s in samples["ccm_breaker_state"]} >= {
        ("primary", "gpt-fake"), ("backup", "gpt-spare")}
    assert value(samples, "ccm_in_flight_requests") == 0
    assert value(samples, "ccm_reloads_total", result="ok") == 0
    assert "ccm_balance_usd" in text  # the ledger's seam: declared, no samples without a ledger

    # bounded labels: nothing a client invents, no request or session ids
    for secret in ("invented-by-client-42", SESSION, "req_ccm_", "claude-opus-5-5"):
        assert secret not in text


def test_metrics_under_two_workers_add_up(tmp_path: Path, upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = upstream
    fake.reset()
    requests = 24
    with start(tmp_path, url, "--workers", "2") as ccm:
        folder = _multiproc_dir(ccm)
        for _ in range(requests):  # a fresh connection each: the kernel spreads them over the workers
            response = httpx.post(f"{ccm.url}/v1/messages", json={
                "model": "claude-opus-5-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-api-key": "ccm-local", "anthropic-version": "2023-06-01"}, timeout=30)
            assert response.status_code == 200, response.text
        workers = {name.rsplit("_", 1)[-1] for name in os.listdir(folder) if name.startswith("counter_")}
        assert len(workers) == 2, f"both workers counted: {sorted(os.listdir(folder))}"
        # each worker hands its counts to the shared files at its own scrape or within its refresh period (1 s)
        deadline = time.monotonic() + 5
        while (value(scrape(ccm.url), "ccm_requests_total", endpoint="messages", model="main") != requests
               and time.monotonic() < deadline):
            time.sleep(0.2)
        for _ in range(4):  # whichever worker answers, it reports both workers' counts
            samples = scrape(ccm.url)
            assert value(samples, "ccm_requests_total", endpoint="messages", model="main") == requests
            assert value(samples, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 21 * requests
            assert value(samples, "ccm_cost_usd_total", model="main") == pytest.approx(
                float(Decimal(21 * 3 + 9 * 15) * requests / 1_000_000))
            time.sleep(0.05)
        deadline = time.monotonic() + 5  # the breaker gauge: every worker's, the worst state (livemax)
        while value(scrape(ccm.url), "ccm_breaker_state", provider="primary") != 0:
            assert time.monotonic() < deadline
    assert not os.path.exists(folder), "ccm run removes its metrics folder when it stops"


def test_metrics_need_the_admin_key_when_one_is_set(tmp_path: Path, upstream: tuple[str, FakeOpenAI]) -> None:
    url, _ = upstream
    with start(tmp_path, url, CCM_ADMIN_KEY="admin-secret") as ccm:
        assert httpx.get(f"{ccm.url}/metrics").status_code == 401
        assert httpx.get(f"{ccm.url}/metrics", headers={"x-api-key": "wrong"}).status_code == 401
        assert "ccm_requests_total" in scrape(ccm.url, authorization="Bearer admin-secret")
        response = httpx.get(f"{ccm.url}/metrics", headers={"x-api-key": "admin-secret"})
        assert response.status_code == 200 and "# TYPE ccm_requests_total counter" in response.text


def test_no_metrics_turns_them_off(tmp_path: Path, upstream: tuple[str, FakeOpenAI]) -> None:
    url, _ = upstream
    with start(tmp_path, url, "--no-metrics") as ccm:
        response = httpx.get(f"{ccm.url}/metrics")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def _buckets(samples: list[Sample]) -> tuple[float, ...]:
    bounds = sorted({float(s.labels["le"]) for s in samples})
    assert bounds[-1] == float("inf")
    return tuple(int(b) if b.is_integer() and b >= 1 else b for b in bounds[:-1])


def _multiproc_dir(ccm: CcmServer) -> str:
    """The folder `ccm run --workers 2` made for the workers' metrics (read from a worker's environment)."""
    assert ccm._process is not None
    pid = ccm._process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        for entry in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            name, _, folder = entry.decode(errors="replace").partition("=")
            if name == "PROMETHEUS_MULTIPROC_DIR":
                return folder
    raise AssertionError("the workers have no PROMETHEUS_MULTIPROC_DIR")


def test_log_format_json_is_one_object_per_line(tmp_path: Path, upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = upstream
    fake.reset()
    with start(tmp_path, url, "--log-format", "json") as ccm:
        client = anthropic.Anthropic(base_url=ccm.url, api_key="ccm-local", max_retries=0, timeout=30)
        client.messages.create(model="claude-opus-5-5", max_tokens=64,  # type: ignore[arg-type]
                               messages=[{"role": "user", "content": "hi"}], metadata={"user_id": USER_ID})
        deadline = time.monotonic() + 5
        while '"path":"/v1/messages"' not in ccm.logs():
            assert time.monotonic() < deadline, ccm.logs()
            time.sleep(0.05)
        logs = ccm.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    [request] = [line for line in lines if line.get("path") == "/v1/messages"]
    assert request["logger"] == "ccm.request" and request["status"] == 200 and request["method"] == "POST"
    assert request["rule"] == "default" and request["model"] == "main" and request["target"] == "primary/gpt-fake"
    assert request["input_tokens"] == 21 and request["output_tokens"] == 9 and request["attempts"] == 1
    assert request["session_id"] == SESSION and request["requested_model"] == "claude-opus-5-5"
    assert request["request_id"].startswith("req_ccm_") and request["latency_ms"] > 0
