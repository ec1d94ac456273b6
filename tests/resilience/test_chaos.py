"""Chaos: a few hundred mixed requests (streaming and not, 16 at a time) through a real `ccm run` while both
upstreams fail at random — error statuses, hangs, garbled bodies, streams cut or stalled midway.

Every request must end in a correct answer (the full text of one of the two upstreams) or a correct Anthropic error
(an error body or `event: error` with a known type, never ccm's own "internal error"); none may hang (a client
timeout would fail the test) and the whole run is bounded. Afterwards nothing is left in flight upstream, the
connections the upstreams hold stay within the concurrency, and the server's log has one line per request and no
traceback.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic

from tests.fakes.script import (
    Behaviour,
    Exchange,
    Hang,
    Reply,
    Status,
    StreamFault,
    malformed_json,
    malformed_sse,
    wrong_content_type,
)
from tests.resilience.rig import Rig

REQUESTS = 300
CONCURRENCY = 16
ERROR_TYPES = {
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "rate_limit_error",
    "api_error", "timeout_error", "overloaded_error",
}


def chaos(seed: int, text: str, failure_rate: float) -> Callable[[Exchange], Behaviour]:
    """A behaviour that fails `failure_rate` of the time, in one of many ways, reproducibly for the seed."""
    rng = random.Random(seed)
    lock = threading.Lock()
    faults: list[Callable[[bool], Behaviour]] = [
        lambda stream: Status(429, "slow down", headers=(("retry-after-ms", "40"),)),
        lambda stream: Status(500, "scripted 500"),
        lambda stream: Status(503, "scripted 503"),
        lambda stream: Status(529, "scripted 529"),
        lambda stream: Hang(2.0),
        lambda stream: malformed_sse() if stream else malformed_json(),
        lambda stream: wrong_content_type(),
        lambda stream: Reply(text=text, pieces=4, fault=StreamFault("close", after=2)),
        lambda stream: Reply(text=text, pieces=4, fault=StreamFault("hang", after=2, seconds=2.0)),
        lambda stream: Reply(text=text, pieces=4, fault=StreamFault("close", after=0)),
        lambda stream: Reply(text=text, pieces=3, chunk_delay=0.05),
    ]

    def behave(exchange: Exchange) -> Behaviour:
        stream = bool(exchange.json and exchange.json.get("stream"))
        with lock:
            roll, pick = rng.random(), rng.randrange(len(faults))
        if roll >= failure_rate:
            return Reply(text=text, pieces=3)
        return faults[pick](stream)

    return behave


def test_chaos_every_request_ends_well_or_in_an_anthropic_error(tmp_path: Path) -> None:
    with Rig.start(tmp_path, max_connections=CONCURRENCY + 4) as rig:
        texts = {"primary says hello", "fallback says hello"}
        rig.primary.default = chaos(1, "primary says hello", failure_rate=0.5)
        rig.fallback.default = chaos(2, "fallback says hello", failure_rate=0.35)
        rig.begin()

        def one(index: int) -> str:
            stream = index % 2 == 0
            try:
                if stream:
                    events, _, failure, _ = rig.stream(f"request {index}")
                    if failure is not None:
                        raise failure
                    received = "".join(
                        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
                    )
                    assert events[0].type == "message_start" and events[-1].type == "message_stop", events
                else:
                    message, _, _ = rig.ask(f"request {index}")
                    received = message.content[0].text  # type: ignore[union-attr]
                assert received in texts, received
                return "answer"
            except anthropic.APIStatusError as error:
                body = error.body
                assert isinstance(body, dict) and body.get("type") == "error", body
                assert body["error"]["type"] in ERROR_TYPES, body
                assert body["error"]["message"] != "internal error", body
                return f"{'stream ' if error.status_code == 200 else ''}{body['error']['type']}"

        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = Counter(pool.map(one, range(REQUESTS)))
        elapsed = time.monotonic() - started

        assert sum(outcomes.values()) == REQUESTS
        assert elapsed < 60, f"{elapsed:.1f}s"
        assert outcomes["answer"] >= REQUESTS * 0.7, outcomes  # the fallbacks absorb most failures
        logs = rig.logs()
        assert len(re.findall(r"ccm\.request: POST /v1/messages ", logs)) == REQUESTS
        skips = logs.count("reason=breaker_open")
        print(f"\nchaos: {REQUESTS} requests in {elapsed:.1f}s: {dict(outcomes)}, {skips} breaker skips")
        # the rig checks on exit: nothing in flight upstream, connections bounded, no traceback in the log

