"""Fault injection through a real `ccm run`: one test per fault, with the `anthropic` SDK as the client.

Each test asserts which upstream served, how many attempts (`x-ccm-attempts`, and the server's attempt log), what the
client saw, that the elapsed time is within the policy (tests/resilience/rig.py: primary `retry 2 backoff
50ms..200ms`, fallback `retry 1`, `timeout connect 1s first_byte 600ms idle 600ms total 10s`), and, when the rig
stops, that nothing leaked. docs/reliability.md lists these tests as the fault matrix.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ccm.upstream.sse import SSEDecoder
from tests.fakes.ccm_server import free_port
from tests.fakes.script import (
    Hang,
    Raw,
    Reply,
    Status,
    StreamFault,
    malformed_json,
    malformed_sse,
    retry_later,
    truncated_json,
    wrong_content_type,
)
from tests.resilience.rig import Rig, established

PRIMARY_TEXT = "Hello from the fake upstream."


def served_by(headers: httpx.Headers, model: str, attempts: int) -> None:
    assert (headers["x-ccm-model"], headers["x-ccm-attempts"]) == (model, str(attempts))


def text_of(events: list) -> str:
    return "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")


def frames(data: bytes) -> list[tuple[str | None, str]]:
    """The SSE frames of a raw body; asserts the body ends on a frame boundary (never a truncated frame)."""
    assert data.endswith(b"\n\n"), data[-200:]
    decoder = SSEDecoder()
    return [(e.event, e.data) for e in decoder.feed(data) + decoder.flush()]


# --- status answers ------------------------------------------------------------------------------------------------


def test_429_with_a_short_retry_after_is_honoured_then_the_primary_serves(rig: Rig) -> None:
    rig.primary.script(Status(429, "slow down", headers=(("retry-after-ms", "150"),)))
    message, headers, elapsed = rig.ask()
    served_by(headers, "main", 2)
    assert message.content[0].text == PRIMARY_TEXT
    assert 0.15 <= elapsed < 1.0  # waited the hinted 150 ms, not the backoff
    assert [a[2] for a in rig.attempts_logged()] == [429, 200]


def test_429_with_a_long_retry_after_falls_back_at_once_and_opens_the_breaker(tmp_path: Path) -> None:
    with Rig.start(tmp_path) as rig:
        rig.primary.script(retry_later(30))
        message, headers, elapsed = rig.ask()
        served_by(headers, "backup", 2)
        assert elapsed < 0.5  # no waiting on the 30 s hint: there is a fallback
        breaker = rig.health()["breakers"]["primary"]
        assert breaker["state"] == "open" and 28 < breaker["retry_in"] <= 30
        _, headers, _ = rig.ask()
        served_by(headers, "backup", 1)  # skipped without a call while open
        assert len(rig.primary.chat_requests()) == 1
        assert "skip provider=primary model=main reason=breaker_open" in rig.ccm.logs()


def test_500_is_retried_per_policy_then_the_fallback_serves(rig: Rig) -> None:
    rig.primary.script(Status(500), Status(500), Status(500))
    message, headers, elapsed = rig.ask()
    served_by(headers, "backup", 4)
    assert len(rig.primary.chat_requests()) == 3 and len(rig.fallback.chat_requests()) == 1
    assert rig.fallback.chat_requests()[0].json["model"] == "gpt-backup"  # sent as the fallback's own model
    assert 0.1 <= elapsed < 1.5  # two backoffs of 50..100 ms and 50..200 ms
    logged = rig.attempts_logged()
    assert [(a[0], a[2], a[4]) for a in logged] == [("primary", 500, "5xx")] * 3 + [("fallback", 200, None)]


@pytest.mark.parametrize("status", [503, 529])
def test_overloaded_recovers_on_retry(rig: Rig, status: int) -> None:
    rig.primary.script(Status(status, "overloaded"))
    message, headers, elapsed = rig.ask()
    served_by(headers, "main", 2)
    assert message.content[0].text == PRIMARY_TEXT
    assert elapsed < 1.0


def test_400_is_neither_retried_nor_fallen_back(rig: Rig) -> None:
    rig.primary.script(Status(400, "messages[0].content: bad value"))
    error, elapsed = rig.fail()
    assert error.status_code == 400
    assert error.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content: bad value" in error.body["error"]["message"]
    assert error.response.headers["x-ccm-attempts"] == "1"
    assert len(rig.primary.chat_requests()) == 1 and not rig.fallback.chat_requests()


def test_401_from_the_primary_falls_back_without_retry(rig: Rig) -> None:
    rig.primary.script(Status(401, "Incorrect API key provided."))
    _, headers, _ = rig.ask()
    served_by(headers, "backup", 2)
    assert len(rig.primary.chat_requests()) == 1


def test_when_all_fail_the_client_gets_the_primarys_error_naming_what_was_tried(rig: Rig) -> None:
    rig.primary.script(*[Status(529, "primary overloaded")] * 3)
    rig.fallback.script(*[Status(500, "fallback broken")] * 2)
    error, elapsed = rig.fail()
    assert error.status_code == 529 and error.body["error"]["type"] == "overloaded_error"
    message = error.body["error"]["message"]
    assert message.startswith("primary overloaded (tried: main (primary): 529, 529, 529, backup (fallback): 500, 500)")
    assert error.response.headers["x-ccm-attempts"] == "5"
    assert elapsed < 2.0
    assert PRIMARY_KEY_SECRET not in message and PRIMARY_KEY_SECRET not in rig.ccm.logs()


PRIMARY_KEY_SECRET = "sk-primary-fake"


# --- transport: connect, hangs, timeouts -------------------------------------------------------------------------


def test_connection_refused_is_retried_then_falls_back(tmp_path: Path) -> None:
    closed = free_port()  # bound and released: nothing listens there
    with Rig.start(tmp_path, primary_url=f"http://127.0.0.1:{closed}/v1") as rig:
        _, headers, elapsed = rig.ask()
        served_by(headers, "backup", 4)
        assert [a[4] for a in rig.attempts_logged()][:3] == ["connect"] * 3
        assert elapsed < 1.5


def test_hang_before_headers_times_out_at_first_byte_and_is_retried(rig: Rig) -> None:
    rig.primary.script(Hang(10))
    message, headers, elapsed = rig.ask()
    served_by(headers, "main", 2)
    assert 0.6 <= elapsed < 1.5  # first_byte 600 ms, then a 50..100 ms backoff
    assert rig.attempts_logged()[0][4] == "timeout"


def test_hang_before_the_first_stream_event_falls_back_transparently(rig: Rig) -> None:
    rig.primary.script(*[Reply(text="never sent", fault=StreamFault("hang", after=0, seconds=10))] * 3)
    events, headers, failure, elapsed = rig.stream()
    assert failure is None
    served_by(headers, "backup", 4)
    assert text_of(events) == PRIMARY_TEXT and events[-1].type == "message_stop"
    assert 1.8 <= elapsed < 3.0  # three first-byte timeouts of 600 ms and two short backoffs


def test_hang_mid_stream_ends_with_an_error_event_after_the_idle_timeout(rig: Rig) -> None:
    rig.primary.script(Reply(text="one two three four", pieces=4, fault=StreamFault("hang", after=3, seconds=10)))
    status, headers, data, elapsed = rig.stream_raw()
    assert status == 200
    served_by(headers, "main", 1)
    sent = frames(data)
    assert sent[0][0] == "message_start"
    assert sent[-1][0] == "error" and '"timeout_error"' in sent[-1][1]
    assert 0.6 <= elapsed < 1.5
    assert not rig.fallback.chat_requests()  # after the first event is forwarded there is no failover
    rig.primary.script(Reply(text="one two three four", pieces=4, fault=StreamFault("hang", after=3, seconds=10)))
    events, _, failure, _ = rig.stream()
    assert failure is not None and failure.body["error"]["type"] == "timeout_error"  # type: ignore[attr-defined]


def test_a_trickle_within_the_idle_timeout_is_relayed_whole(rig: Rig) -> None:
    rig.primary.script(Reply(text="slow but steady wins", pieces=4, chunk_delay=0.2))
    events, headers, failure, elapsed = rig.stream()
    assert failure is None
    served_by(headers, "main", 1)
    assert text_of(events) == "slow but steady wins"
    assert elapsed >= 0.2 * 4


def test_a_trickle_slower_than_the_idle_timeout_ends_with_an_error_event(rig: Rig) -> None:
    rig.primary.script(Reply(text="too slow to wait for", pieces=4, chunk_delay=1.5))
    status, _, data, elapsed = rig.stream_raw()
    assert status == 200
    sent = frames(data)
    assert sent[0][0] == "message_start" and sent[-1][0] == "error" and '"timeout_error"' in sent[-1][1]
    assert 0.6 <= elapsed < 1.4


def test_the_total_timeout_cuts_a_stream_that_keeps_trickling(tmp_path: Path) -> None:
    with Rig.start(tmp_path, primary_total="1500ms") as rig:
        rig.primary.script(Reply(text="a b c d e f g h i j k l", pieces=12, chunk_delay=0.4))
        status, _, data, elapsed = rig.stream_raw()
        assert status == 200
        sent = frames(data)
        assert sent[-1][0] == "error" and '"timeout_error"' in sent[-1][1]
        assert 1.4 <= elapsed < 2.2


def test_the_total_timeout_bounds_retries_and_stops_the_walk(tmp_path: Path) -> None:
    with Rig.start(tmp_path, primary_total="1s") as rig:
        rig.primary.script(Hang(10), Hang(10), Hang(10))
        error, elapsed = rig.fail()
        assert error.status_code == 504 and error.body["error"]["type"] == "timeout_error"
        assert 0.95 <= elapsed < 1.6
        assert not rig.fallback.chat_requests()  # no time left for a fallback


def test_the_total_timeout_cancels_a_stream_still_waiting_for_its_first_event(tmp_path: Path) -> None:
    with Rig.start(tmp_path, primary_total="1s") as rig:
        rig.primary.script(*[Reply(text="x", fault=StreamFault("hang", after=0, seconds=10))] * 2)
        status, _, data, elapsed = rig.stream_raw()
        assert status == 504 and b'"timeout_error"' in data and b"1s total timeout" in data
        assert 0.95 <= elapsed < 1.6  # the second try was cut by the deadline, not by its own 600 ms first_byte
        assert not rig.fallback.chat_requests()
        # on exit the rig checks the primary has nothing in flight: the cut attempt's connection was closed


def test_a_hedge_serves_a_hung_primarys_request_from_the_fallback_and_closes_the_hung_connection(
    tmp_path: Path,
) -> None:
    with Rig.start(tmp_path, primary_retries=0, main_block=" { hedge after 200ms }") as rig:
        rig.primary.script(Hang(10))
        message, headers, elapsed = rig.ask()
        served_by(headers, "backup", 2)
        assert message.content[0].text == PRIMARY_TEXT
        assert 0.2 <= elapsed < 0.55  # the hedge's 200 ms, not the primary's 600 ms first_byte
        assert [(a[0], a[2], a[4]) for a in rig.attempts_logged()] == [("fallback", 200, None),
                                                                        ("primary", 499, "hedged")]
        rig.primary.script(Reply(text="streamed", fault=StreamFault("hang", after=0, seconds=10)))
        events, headers, failure, elapsed = rig.stream()
        assert failure is None and events[-1].type == "message_stop"
        served_by(headers, "backup", 2)
        assert elapsed < 0.55
        # on exit the rig checks the primary has nothing in flight: both hung attempts' connections were closed


def test_a_client_that_gives_up_cancels_the_upstream_request(rig: Rig) -> None:
    rig.primary.script(Reply(text="never read", pieces=4, chunk_delay=0.5))
    body = {"model": "claude-opus-5-5", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{rig.ccm.url}/v1/messages", json=body, timeout=10.0) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    started = time.monotonic()
    assert _until(lambda: rig.primary.in_flight == 0, 2.0)
    assert time.monotonic() - started < 1.0  # the fake's 1.5 s of trickle was cut short
    assert _until(lambda: "client_disconnected" in rig.ccm.logs(), 2.0)


# --- broken answers --------------------------------------------------------------------------------------------


def test_close_mid_stream_ends_with_an_error_event(rig: Rig) -> None:
    rig.primary.script(Reply(text="cut off in the middle", pieces=4, fault=StreamFault("close", after=3)))
    status, headers, data, elapsed = rig.stream_raw()
    assert status == 200
    served_by(headers, "main", 1)
    sent = frames(data)
    assert sent[0][0] == "message_start" and sent[-1][0] == "error"
    assert elapsed < 1.0


def test_close_before_the_first_event_is_retried(rig: Rig) -> None:
    rig.primary.script(Reply(text="x", fault=StreamFault("close", after=0)))
    events, headers, failure, _ = rig.stream()
    assert failure is None
    served_by(headers, "main", 2)
    assert text_of(events) == PRIMARY_TEXT


def test_a_stream_that_ends_cleanly_before_its_finish_is_an_error_event_not_an_answer(rig: Rig) -> None:
    # The chunked body is properly terminated, but neither a finish_reason nor [DONE] came: a fragment.
    rig.primary.script(Reply(text="cut off in the middle", pieces=4, fault=StreamFault("truncate", after=3)))
    status, headers, data, _ = rig.stream_raw()
    assert status == 200
    served_by(headers, "main", 1)
    sent = frames(data)
    names = [name for name, _ in sent]
    assert names[0] == "message_start" and names[-1] == "error"
    assert "message_stop" not in names and "message_delta" not in names
    assert "ended early" in sent[-1][1] and '"api_error"' in sent[-1][1]


def test_a_stream_that_ends_cleanly_before_its_first_event_is_retried(rig: Rig) -> None:
    rig.primary.script(Reply(text="x", fault=StreamFault("truncate", after=0)))
    events, headers, failure, _ = rig.stream()
    assert failure is None
    served_by(headers, "main", 2)
    assert text_of(events) == PRIMARY_TEXT
    assert rig.attempts_logged()[0][4] == "truncated"


def test_a_body_whose_json_stops_before_its_end_is_retried(rig: Rig) -> None:
    rig.primary.script(truncated_json())
    message, headers, _ = rig.ask()
    assert message.content[0].text == PRIMARY_TEXT
    served_by(headers, "main", 2)
    assert rig.attempts_logged()[0][4] == "truncated"


@pytest.mark.parametrize(
    ("fault", "stream"),
    [
        pytest.param(malformed_json(), False, id="malformed-json"),
        pytest.param(wrong_content_type(), False, id="wrong-content-type"),
        pytest.param(Raw(200, b'{"error": {"message": "model crashed", "type": "server_error"}}'), False,
                     id="200-with-error-body"),
        pytest.param(malformed_sse(), True, id="malformed-sse"),
        pytest.param(Reply(text="x", fault=StreamFault("malformed", after=0)), True, id="malformed-first-event"),
    ],
)
def test_a_garbled_answer_falls_back_without_retry(rig: Rig, fault: object, stream: bool) -> None:
    rig.primary.script(fault)  # type: ignore[arg-type]
    if stream:
        events, headers, failure, _ = rig.stream()
        assert failure is None and text_of(events) == PRIMARY_TEXT
    else:
        message, headers, _ = rig.ask()
        assert message.content[0].text == PRIMARY_TEXT
    served_by(headers, "backup", 2)
    assert rig.attempts_logged()[0][4] == "protocol"
    assert len(rig.primary.chat_requests()) == 1


def test_a_200_error_body_with_a_status_code_is_treated_as_that_status(rig: Rig) -> None:
    rig.primary.script(Raw(200, b'{"error": {"message": "Rate limit exceeded", "code": 429}}'))
    _, headers, _ = rig.ask()
    served_by(headers, "main", 2)  # OpenRouter's way of relaying a 429: retried like one
    assert rig.attempts_logged()[0][4] == "429"


# --- breaker ---------------------------------------------------------------------------------------------------


def test_the_breaker_opens_after_consecutive_failures_and_skips_to_the_fallback(tmp_path: Path) -> None:
    with Rig.start(tmp_path) as rig:
        rig.primary.script(*[Status(500)] * 6)
        for _ in range(2):
            _, headers, _ = rig.ask()
            assert headers["x-ccm-model"] == "backup"
        assert len(rig.primary.chat_requests()) == 5  # the fifth consecutive failure opened it mid-request
        breaker = rig.health()["breakers"]["primary"]
        assert breaker["state"] == "open" and breaker["opened"] == 1 and breaker["consecutive_failures"] == 5
        _, headers, elapsed = rig.ask()
        served_by(headers, "backup", 1)
        assert len(rig.primary.chat_requests()) == 5 and elapsed < 0.3


def test_the_breaker_half_opens_with_one_probe_and_closes_on_success(tmp_path: Path) -> None:
    with Rig.start(tmp_path) as rig:
        rig.primary.script(retry_later(1))  # longer than the 200 ms cap: held open for 1 s
        _, headers, _ = rig.ask()
        served_by(headers, "backup", 2)
        assert rig.health()["breakers"]["primary"]["state"] == "open"
        time.sleep(1.05)
        assert rig.health()["breakers"]["primary"]["state"] == "half_open"
        _, headers, _ = rig.ask()
        served_by(headers, "main", 1)  # the probe succeeded
        assert rig.health()["breakers"]["primary"]["state"] == "closed"


# --- chains ----------------------------------------------------------------------------------------------------


def test_a_request_too_long_for_the_primary_skips_it_before_any_call(tmp_path: Path) -> None:
    with Rig.start(tmp_path, main_block=" { context 1k }") as rig:
        message, headers, _ = rig.ask("word " * 3000)
        served_by(headers, "backup", 1)
        assert not rig.primary.chat_requests()
        assert "skip provider=primary model=main reason=context" in rig.ccm.logs()
        _, headers, _ = rig.ask("short")
        served_by(headers, "main", 1)


def test_the_fallback_chain_crosses_from_openai_to_anthropic(tmp_path: Path) -> None:
    with Rig.start(tmp_path, fallback="anthropic") as rig:
        rig.primary.script(*[Status(503)] * 3)
        message, headers, _ = rig.ask()
        served_by(headers, "backup", 4)
        (request,) = rig.fallback.message_requests()
        assert request.json["model"] == "claude-backup-1"
        assert message.content[0].type == "text"
        events, headers, failure, _ = rig.stream()
        assert failure is None and events[-1].type == "message_stop"


def test_the_fallback_example_retries_its_primary_then_fails_over(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "fallback.ccm"
    with Rig.start(tmp_path, routes=example.read_text()) as rig:
        rig.primary.script(*[Status(429, "slow down", headers=(("retry-after-ms", "20"),))] * 4)
        message, headers, elapsed = rig.ask()
        served_by(headers, "spare", 5)  # `retry 3`: four tries on the primary, three after a 20 ms hint
        assert message.content[0].text == PRIMARY_TEXT
        assert [r.json["model"] for r in rig.fallback.chat_requests()] == ["gpt-5"]
        # three 20 ms waits (the fourth 429 exhausts the retries: the fallback is asked at once); libuv's timers
        # tick in whole milliseconds, so they may each end a little early
        assert 0.055 <= elapsed < 1.0
        _, headers, _ = rig.ask(model="claude-haiku-5-5")
        served_by(headers, "quick", 1)


def test_connections_to_upstreams_stay_bounded_over_many_failures(rig: Rig) -> None:
    for _ in range(4):
        rig.primary.script(Hang(10), Reply(text="x", fault=StreamFault("close", after=0)))
        _, headers, failure, _ = rig.stream()
        assert failure is None
        served_by(headers, "main", 3)  # the success resets the breaker's count every time
        assert established(rig.primary_port) <= 2


def _until(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False
