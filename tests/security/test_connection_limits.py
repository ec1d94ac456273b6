"""Connection-level limits (issue 12, items 6 and 13): what a hostile local process could do to the default server
before any route is chosen. Before: idle and 1-byte-per-second connections were never closed (2,000 held 40 s), a
16 MB header was accepted, four unfinished 300 MB heads took 839 MB, filling the file-descriptor limit made every
request fail with nothing logged, nothing bounded the bodies buffered at once, and hypercorn served a request
smuggled behind Transfer-Encoding and Content-Length.

The protocol's limits are measured on ccm's own uvicorn set-up with small limits in this process (fast), and their
defaults and wiring on a real `ccm run`, both servers, with raw sockets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm.core.limits import ServerLimits
from tests.fakes import CcmServer, FakeAnthropic, Reply, serve
from tests.security.rawhttp import closed, connect, head, limited_server, read_response, send_quietly

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
JSON = {"content_type": "application/json", "anthropic_version": "2023-06-01"}


def request(body: str = BODY, **headers: str) -> bytes:
    return head(body_length=len(body.encode()), headers={**JSON, **headers}) + body.encode()


# --- the protocol, in this process, with small limits -----------------------------------------------------------

SMALL = ServerLimits(head_timeout=1.0, max_head_bytes=8 * 1024, max_headers=20, max_connections=12,
                     body_budget=1024 * 1024)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with limited_server(SMALL) as bound:
        yield bound


def test_idle_and_dripping_connections_are_closed_after_the_head_timeout(port: int) -> None:
    idle = [connect(port) for _ in range(5)]
    dripping = [connect(port) for _ in range(3)]
    started = time.monotonic()
    message = head(headers=JSON)
    sent = 0
    while time.monotonic() - started < 3 and sent < len(message):
        for sock in dripping:
            send_quietly(sock, message[sent:sent + 1])  # a byte at a time: the head never completes in time
        sent += 1
        time.sleep(0.1)
    for sock in dripping:
        answer = read_response(sock, timeout=3)
        assert answer is not None and answer.status == 408
        assert answer.json()["error"]["type"] == "invalid_request_error"
    assert all(closed(sock, timeout=3) for sock in idle)
    assert time.monotonic() - started < 5


def test_a_keep_alive_connection_outlives_the_head_timeout(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request())
        assert read_response(sock).status == 200  # type: ignore[union-attr]
        time.sleep(SMALL.head_timeout * 1.5)  # idle between requests: the keep-alive timeout's business (75 s)
        sock.sendall(request())
        assert read_response(sock).status == 200  # type: ignore[union-attr]


def test_a_head_over_the_cap_is_431(port: int) -> None:
    with connect(port) as sock:
        send_quietly(sock, head(headers=JSON)[:-2])
        for _ in range(64):  # 1 MB of one header, sent as a client would
            if not send_quietly(sock, b"x-filler: " + b"a" * 16_000 + b"\r\n"):
                break
        answer = read_response(sock)
        assert answer is not None and answer.status == 431
        assert closed(sock)


def test_too_many_headers_is_431(port: int) -> None:
    with connect(port) as sock:
        many = {f"x_h{i}": "1" for i in range(SMALL.max_headers + 5)}
        sock.sendall(request(**many))
        answer = read_response(sock)
        assert answer is not None and answer.status == 431
        assert answer.json()["error"]["message"] == f"Request has more than {SMALL.max_headers} headers"


def test_the_connection_cap_refuses_with_529_and_logs_once(port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ccm.core")
    held = [connect(port) for _ in range(SMALL.max_connections)]
    try:
        time.sleep(0.2)
        refused = [connect(port) for _ in range(5)]
        for sock in refused:
            answer = read_response(sock, timeout=3)
            assert answer is not None and answer.status == 529 and answer.headers["retry-after"] == "1"
            assert answer.json() == {"type": "error", "error": {
                "type": "overloaded_error", "message": "ccm has too many connections open; retry shortly"}}
            sock.close()
        reached = [r for r in caplog.records if "connection limit reached" in r.getMessage()]
        assert len(reached) == 1
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the server notices the closed ones; a new connection is served again
        with connect(port) as sock:
            sock.sendall(request())
            answer = read_response(sock)
        if answer is not None and answer.status == 200:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_body_budget_refuses_with_529_and_gives_back(port: int) -> None:
    budget = SMALL.body_budget
    declared, first = budget * 7 // 10, budget * 6 // 10
    holding = connect(port)
    holding.sendall(head(body_length=declared, headers=JSON) + b"x" * first)  # held, unfinished
    time.sleep(0.3)
    with connect(port) as sock:  # would not fit now: refused at once, its body unread
        sock.sendall(head(body_length=budget // 2, headers=JSON))
        answer = read_response(sock, timeout=3)
        assert answer is not None and answer.status == 529
        assert answer.json()["error"]["type"] == "overloaded_error" and answer.headers["retry-after"] == "1"
    with connect(port) as sock:  # fits beside the held one
        body = b"y" * (budget // 4)
        sock.sendall(head(body_length=len(body), headers=JSON) + body)
        assert read_response(sock).json() == {"size": len(body)}  # type: ignore[union-attr]
    holding.sendall(b"x" * (declared - first))  # the held one finishes and is answered: its bytes go back
    assert read_response(holding).json() == {"size": declared}  # type: ignore[union-attr]
    holding.close()
    with connect(port) as sock:
        sock.sendall(head(body_length=budget // 2, headers=JSON) + b"z" * (budget // 2))
        assert read_response(sock).status == 200  # type: ignore[union-attr]


def test_a_chunked_body_past_the_budget_is_cut_off_with_529(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(head(body_length=None, transfer_encoding="chunked", headers=JSON))
        chunk = b"c" * 65536
        for _ in range(2 * SMALL.body_budget // len(chunk)):
            if not send_quietly(sock, b"%x\r\n%s\r\n" % (len(chunk), chunk)):
                break
        answer = read_response(sock)
        assert answer is not None and answer.status == 529


# --- the defaults and the wiring, on a real `ccm run` ----------------------------------------------------------

ROUTES = """\
provider anthropic {
  type anthropic
  url  env("UPSTREAM_URL")
  key  env("UPSTREAM_KEY")
}

model main = anthropic/claude-upstream

settings {
  body_limit 512mb
}

route {
  default -> main
}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeAnthropic]]:
    with serve(FakeAnthropic("sk-ant-up", default=Reply(text="hello"))) as (url, fake):
        yield url, fake


class LimitedCcm(CcmServer):
    """`ccm run` with a low file-descriptor limit, so its connection cap is small: (128 - 64) // 2 = 32."""

    @property
    def command(self) -> list[str]:
        return ["sh", "-c", 'ulimit -n 128 && exec "$@"', "sh", *super().command]


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def ccm(request: pytest.FixtureRequest, upstream: tuple[str, FakeAnthropic],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[CcmServer]:
    folder = tmp_path_factory.mktemp(f"limits-{request.param}")
    env = {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": "sk-ant-up"}
    with LimitedCcm.from_text(folder, ROUTES, env, args=["--server", request.param]) as server:
        server.server_name = request.param  # type: ignore[attr-defined]
        yield server


def _rss(server: CcmServer) -> int:
    assert server._process is not None
    status = Path(f"/proc/{server._process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024


def test_a_request_is_served(ccm: CcmServer) -> None:
    with connect(ccm.port) as sock:
        sock.sendall(request())
        answer = read_response(sock)
        assert answer is not None and answer.status == 200, answer


def test_smuggling_shapes_get_400_and_nothing_behind_them_is_served(
    ccm: CcmServer, upstream: tuple[str, FakeAnthropic]
) -> None:
    before = len(upstream[1].message_requests())
    smuggled = b"0\r\n\r\nGET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    with connect(ccm.port) as sock:
        sock.sendall(head(body_length=len(smuggled), transfer_encoding="chunked", headers=JSON) + smuggled)
        answer = read_response(sock)
        assert answer is not None and answer.status == 400
        assert closed(sock, timeout=5)  # and no second answer: /health was never served
    assert len(upstream[1].message_requests()) == before


def test_a_huge_head_is_refused_and_memory_stays_flat(ccm: CcmServer) -> None:
    """16 MB of one header on one connection, 2 MB unfinished on four others (hypercorn answers 431 too, past its
    h11_max_incomplete_size)."""
    baseline = _rss(ccm)
    results: list[int | None] = []

    def flood(total: int, finish: bool) -> None:
        with connect(ccm.port) as sock:
            send_quietly(sock, head(headers=JSON)[:-2])
            line = b"x-filler: " + b"a" * 65_000 + b"\r\n"
            for _ in range(total // len(line)):
                if not send_quietly(sock, line):
                    break
            if finish:
                send_quietly(sock, b"\r\n")
            answer = read_response(sock)
            results.append(None if answer is None else answer.status)

    threads = [threading.Thread(target=flood, args=(16 * 1024 * 1024, True))]
    threads += [threading.Thread(target=flood, args=(2 * 1024 * 1024, False)) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert set(results) <= {431, None} and 431 in results, results  # None: closed before the answer was read
    assert time.monotonic() - started < 20
    assert _rss(ccm) - baseline < 50 * 1024 * 1024


def test_a_thousand_headers_are_refused(ccm: CcmServer) -> None:
    with connect(ccm.port) as sock:
        sock.sendall(request(**{f"x_h{i}": "1" for i in range(1000)}))
        answer = read_response(sock)
        assert answer is not None and answer.status == 431


def test_a_body_over_the_default_budget_is_refused_unread(ccm: CcmServer) -> None:
    with connect(ccm.port) as sock:
        sock.sendall(head(body_length=300 * 1024 * 1024, headers=JSON))  # under body_limit (512 MB), over the budget
        answer = read_response(sock, timeout=5)
        assert answer is not None and answer.status == 529
        assert answer.json()["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("ccm", ["uvicorn"], indirect=True)  # hypercorn has no connection cap (docs/security.md)
def test_the_connection_cap_keeps_the_server_serving(ccm: CcmServer) -> None:
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(40):
            held.append(connect(ccm.port))
        time.sleep(0.3)
        for sock in held:
            sock.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                refused += bool(sock.recv(1024).startswith(b"HTTP/1.1 529"))
    finally:
        for sock in held:
            sock.close()
    assert refused >= 40 - 32
    assert ccm.logs().count("connection limit reached") == 1
    deadline = time.monotonic() + 5
    while True:
        with connect(ccm.port) as sock:
            sock.sendall(request())
            answer = read_response(sock)
        if answer is not None and answer.status == 200:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)


@pytest.mark.parametrize("ccm", ["uvicorn"], indirect=True)
def test_slow_heads_are_closed_at_the_default_timeout(ccm: CcmServer) -> None:
    """uvicorn closes a head that is not complete 10 s after its first byte; hypercorn has only its keep-alive
    timeout (75 s), too long to wait for here: only uvicorn is timed."""
    idle = connect(ccm.port)
    dripping = connect(ccm.port)
    kept = connect(ccm.port)
    kept.sendall(request())
    assert read_response(kept).status == 200  # type: ignore[union-attr]
    started = time.monotonic()
    message = head(headers=JSON)
    for byte in range(len(message)):
        if time.monotonic() - started > 12 or not send_quietly(dripping, message[byte:byte + 1]):
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    assert 9 < elapsed < 12, elapsed
    assert closed(idle, timeout=2) and closed(dripping, timeout=2)
    kept.sendall(request())  # a kept-alive connection is not a slow head
    assert read_response(kept).status == 200  # type: ignore[union-attr]
    for sock in (idle, dripping, kept):
        sock.close()


@pytest.mark.parametrize("server_name", ["uvicorn", "hypercorn"])
def test_workers_serve_behind_the_same_limits(
    server_name: str, upstream: tuple[str, FakeAnthropic], tmp_path: Path
) -> None:
    env = {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": "sk-ant-up"}
    with CcmServer.from_text(tmp_path, ROUTES, env, args=["--server", server_name, "--workers", "2"],
                             startup_timeout=40) as server:
        with connect(server.port) as sock:
            sock.sendall(request())
            assert read_response(sock).status == 200  # type: ignore[union-attr]
        with connect(server.port) as sock:
            sock.sendall(head(body_length=300 * 1024 * 1024, headers=JSON))
            answer = read_response(sock, timeout=5)
            assert answer is not None and answer.status == 529  # EdgeLimits runs in each worker
