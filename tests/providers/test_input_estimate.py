"""The input token count in `message_start` (issue 13, item 8): a translating adapter's upstream reports usage only
at the end, so `message_start` said `input_tokens: 0` until then. With the core's local count on the `Call`
(`Call.input_tokens`), `message_start` carries it; the final `message_delta` keeps the upstream's real counts."""

from __future__ import annotations

import pytest

from ccm.providers.base import Call
from tests.providers.test_truncated import STREAMS, adapter, consume, orjson
from tests.providers.translation_checks import parse_events

TRANSLATING = ["openai", "gemini", "openai-responses"]
REAL_INPUT = {"openai": 12, "gemini": 9, "openai-responses": 9}


def call(kind: str, input_tokens: int | None) -> Call:
    from tests.providers.test_truncated import call as base

    made = base(kind)
    return Call(made.body, made.raw, made.headers, made.stream, made.model, input_tokens=input_tokens)


@pytest.mark.parametrize("kind", TRANSLATING)
@pytest.mark.parametrize("estimate", [1234, None])
async def test_message_start_carries_the_estimate_and_message_delta_the_upstreams_count(kind: str,
                                                                                        estimate: int | None) -> None:
    head, rest = STREAMS[kind]
    reply = await adapter(kind, head + rest).send(call(kind, estimate))
    output, error = await consume(reply)
    assert error is None
    events = parse_events(output)
    assert events[0][1]["message"]["usage"]["input_tokens"] == (estimate or 0)
    final = [data for name, data in events if name == "message_delta"][-1]
    assert final["usage"]["input_tokens"] == REAL_INPUT[kind]


async def test_an_upstream_count_known_at_the_start_wins_over_the_estimate() -> None:
    # Gemini repeats usageMetadata (promptTokenCount) on every chunk, the first included
    first = b"data: " + orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}],
                                      "usageMetadata": {"promptTokenCount": 77}}) + b"\n\n"
    _, rest = STREAMS["gemini"]
    reply = await adapter("gemini", [first, *rest]).send(call("gemini", 1234))
    output, _ = await consume(reply)
    assert parse_events(output)[0][1]["message"]["usage"]["input_tokens"] == 77


@pytest.mark.parametrize("kind", TRANSLATING)
async def test_a_non_stream_message_has_the_upstreams_count(kind: str) -> None:
    from tests.providers.test_truncated import COMPLETE

    made = call(kind, 1234)
    non_stream = Call(dict(made.body, stream=False), made.raw, made.headers, False, made.model, input_tokens=1234)
    reply = await adapter(kind, [orjson.dumps(COMPLETE[kind])], "application/json").send(non_stream)
    assert reply.body is not None
    assert orjson.loads(reply.body)["usage"]["input_tokens"] != 1234
