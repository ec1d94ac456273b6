"""The API's edge on a real `ccm run` with no inbound key (the default set-up): what a web page on the same machine
can send is refused, model names are checked before any upstream call, client values cannot forge log lines, keys
an upstream echoes never come back, the detail of /health is the admin's, and a body over the limit gets a 413 the
client can read."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes import CcmServer, FakeAnthropic, Reply, Status, serve
from tests.fakes.script import Exchange
from tests.fakes.upstream import Answer, Rejected

UPSTREAM_KEY = "sk-ant-upstream-secret-1"
ROUTES = """\
provider anthropic {
  type anthropic
  url  env("UPSTREAM_URL")
  key  env("UPSTREAM_KEY")
}

model main = anthropic/claude-upstream

settings {
  body_limit 64kb
}

route {
  default -> main
}
"""
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
JSON = {"content-type": "application/json", "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeAnthropic]]:
    with serve(FakeAnthropic(UPSTREAM_KEY, default=Reply(text="hello"))) as (url, fake):
        yield url, fake


@pytest.fixture(scope="module")
def ccm(upstream: tuple[str, FakeAnthropic], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CcmServer]:
    folder = tmp_path_factory.mktemp("edge")
    env = {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": UPSTREAM_KEY, "CCM_ADMIN_KEY": "admin-key-123456"}
    with CcmServer.from_text(folder, ROUTES, env) as server:
        yield server


def post(ccm: CcmServer, body: object = BODY, **headers: str) -> httpx.Response:
    return httpx.post(f"{ccm.url}/v1/messages", content=json.dumps(body), headers={**JSON, **headers}, timeout=10)


def test_an_ordinary_local_request_is_served(ccm: CcmServer) -> None:
    assert post(ccm).status_code == 200


@pytest.mark.parametrize("headers", [
    {"host": "rebind.evil.example"},  # DNS rebinding: the page's own name now points at 127.0.0.1
    {"host": "127.0.0.1.evil.example:8080"},
    {"origin": "https://evil.example"},
    {"origin": "null"},
    {"sec-fetch-site": "cross-site"},
])
def test_what_a_web_page_can_send_is_refused_before_any_upstream_call(
    ccm: CcmServer, upstream: tuple[str, FakeAnthropic], headers: dict[str, str]
) -> None:
    before = len(upstream[1].message_requests())
    answer = post(ccm, **headers)
    assert answer.status_code == 403 and answer.json()["error"]["type"] == "permission_error"
    assert len(upstream[1].message_requests()) == before


def test_a_simple_cross_site_post_is_refused(ccm: CcmServer) -> None:
    """`text/plain` is what a page can POST without a CORS preflight."""
    answer = httpx.post(f"{ccm.url}/v1/messages", content=json.dumps(BODY), headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and answer.json()["type"] == "error"


def test_health_reads_the_same_for_a_rebinding_page(ccm: CcmServer) -> None:
    assert httpx.get(f"{ccm.url}/health", headers={"host": "rebind.evil.example"}).status_code == 403


def test_the_loopback_names_are_all_accepted(ccm: CcmServer) -> None:
    port = ccm.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"[::1]:{port}"):
        assert post(ccm, host=host).status_code == 200, host


@pytest.mark.parametrize("model", ["anthropic/é中", "anthropic/a\r\nSet-Cookie: x", "x" * 300, "a\x00b"])
def test_a_model_name_that_is_not_printable_ascii_is_refused_before_any_upstream_call(
    ccm: CcmServer, upstream: tuple[str, FakeAnthropic], model: str
) -> None:
    before = len(upstream[1].message_requests())
    answer = post(ccm, {**BODY, "model": model})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert len(upstream[1].message_requests()) == before


def test_client_values_cannot_forge_a_log_line(ccm: CcmServer) -> None:
    httpx.post(f"{ccm.url}/v1/messages%0A2026-01-01 INFO ccm.request: POST /v1/messages status=200",
               content=b"{}", headers=JSON)
    deadline = time.monotonic() + 5  # the server writes its line once the answer is out: wait for it
    while "\\n2026-01-01" not in ccm.logs() and time.monotonic() < deadline:
        time.sleep(0.02)
    ccm_log = ccm.logs()
    assert "\n2026-01-01 INFO ccm.request" not in ccm_log
    assert "\\n2026-01-01" in ccm_log


def test_the_detail_of_health_needs_the_admin_key(ccm: CcmServer) -> None:
    public = httpx.get(f"{ccm.url}/health").json()
    # which router this is (`ccm code` asks): ccm, and a digest of the route file's path, never the path
    assert set(public) == {"status", "version", "service", "routes"}
    assert public["service"] == "ccm" and len(public["routes"]) == 16 and "/" not in public["routes"]
    detail = httpx.get(f"{ccm.url}/health", headers={"x-api-key": "admin-key-123456"}).json()
    assert "providers" in detail and "breakers" in detail and "reload" in detail


def test_an_upstream_that_echoes_its_key_does_not_hand_it_back(
    ccm: CcmServer, upstream: tuple[str, FakeAnthropic]
) -> None:
    echo = f"invalid header x-api-key: {UPSTREAM_KEY}"
    upstream[1].script(Status(400, echo))
    answer = post(ccm)
    assert answer.status_code == 400
    assert UPSTREAM_KEY not in answer.text and "[redacted]" in answer.text
    assert UPSTREAM_KEY not in ccm.logs()


def test_a_body_over_the_limit_gets_a_413_an_ordinary_client_can_read(ccm: CcmServer, tmp_path: Path) -> None:
    """urllib sends the whole body before it reads: ccm reads it on (bounded) instead of hanging up mid-upload."""
    big = json.dumps({**BODY, "system": "x" * 2_000_000}).encode()
    request = urllib.request.Request(f"{ccm.url}/v1/messages", data=big, headers=JSON, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=20)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["type"] == "request_too_large"


class EchoingCount(FakeAnthropic):
    """An Anthropic whose count_tokens refuses the request with the key in its message (as some proxies do)."""

    def _count_tokens(self, exchange: Exchange) -> Answer:
        raise Rejected(400, f"invalid header x-api-key: {exchange.headers.get('x-api-key')}")


def test_a_forwarded_count_that_echoes_the_key_does_not_hand_it_back(tmp_path: Path) -> None:
    routes = ROUTES.replace("  body_limit 64kb\n", "  body_limit 64kb\n  count_tokens anthropic\n")
    with serve(EchoingCount(UPSTREAM_KEY)) as (url, _), \
            CcmServer.from_text(tmp_path, routes, {"UPSTREAM_URL": url, "UPSTREAM_KEY": UPSTREAM_KEY}) as ccm:
        answer = httpx.post(f"{ccm.url}/v1/messages/count_tokens", headers=JSON, timeout=10,
                            json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 400
        assert UPSTREAM_KEY not in answer.text and "[redacted]" in answer.text
        assert UPSTREAM_KEY not in ccm.logs()
