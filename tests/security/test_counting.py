"""Token counting on hostile bodies, on a real `ccm run`: a large body is counted off the event loop (other
requests keep being served), one too large to tokenize is estimated, and a tokenizer failure is never a 500."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import CcmServer

pytestmark = pytest.mark.slow  # the real Claude Code CLI or real `ccm run`s: seconds each

ROUTES = """\
provider anthropic {
  type anthropic
  url  "http://127.0.0.1:9"
}

model main = anthropic/claude-upstream
model long = anthropic/claude-long

route {
  tokens > 100k -> long
  default       -> main
}

test "short requests stay on main" {
  request { model: "claude-sonnet-4-5" }
  expect  main
}
"""
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def ccm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CcmServer]:
    with CcmServer.from_text(tmp_path_factory.mktemp("counting"), ROUTES, {}) as server:
        yield server


def count(ccm: CcmServer, text: str, timeout: float = 60) -> httpx.Response:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{ccm.url}/v1/messages/count_tokens", content=json.dumps(body), headers=JSON, timeout=timeout)


def test_whitespace_that_makes_the_tokenizer_panic_is_counted(ccm: CcmServer) -> None:
    answer = count(ccm, " " * 5_000_000)
    assert answer.status_code == 200 and answer.json()["input_tokens"] > 0


def test_the_loop_keeps_serving_while_a_large_body_is_counted(ccm: CcmServer) -> None:
    slowest: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.monotonic()
            assert httpx.get(f"{ccm.url}/health", timeout=5).status_code == 200
            slowest.append(time.monotonic() - started)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        answer = count(ccm, "word " * 700_000)  # 3.5 MB of text: seconds of tokenizing
    finally:
        done.set()
        poller.join()
    assert answer.status_code == 200
    assert max(slowest) < 1.0, f"/health waited {max(slowest):.2f} s"


def test_a_body_too_large_to_tokenize_is_estimated_and_routes_by_the_estimate(ccm: CcmServer) -> None:
    answer = count(ccm, "x" * 8_000_000)
    assert answer.status_code == 200 and answer.json()["input_tokens"] >= 2_000_000
