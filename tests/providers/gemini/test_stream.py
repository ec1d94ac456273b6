"""Gemini SSE transcripts (tests/providers/golden/gemini/streams/*.sse, written per PROTOCOL §7) → Anthropic events.

Each transcript's translation is compared with its golden file, checked against the §3 grammar, fed again in random
byte splits (same output), and accumulated by the official `anthropic` SDK. Failure transcripts must raise the right
`UpstreamError`.
"""

from __future__ import annotations

import random

import pytest

from ccm.errors import UpstreamError
from ccm.providers.base import Usage
from ccm.providers.gemini.reply import GeminiReader
from tests.providers.translation_checks import (
    GOLDEN,
    assert_golden,
    check_grammar,
    normalise,
    random_splits,
    relay,
    sdk_final_message,
)

STREAMS = GOLDEN / "gemini" / "streams"
TRANSCRIPTS = sorted(p.stem for p in STREAMS.glob("*.sse") if not p.stem.startswith("error-"))


def translate(pieces: list[bytes]) -> tuple[bytes, Usage]:
    usage = Usage()
    out, error = relay(GeminiReader("gemini", "claude-opus-5-5", usage), pieces)
    if error is not None:
        raise error
    return out, usage


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript_matches_golden_and_protocol(name: str) -> None:
    raw = (STREAMS / f"{name}.sse").read_bytes()
    out, _ = translate([raw])
    check_grammar(out)
    assert_golden(STREAMS / f"{name}.txt", normalise(out.decode()))
    for seed in range(3):
        split, _ = translate(random_splits(raw, random.Random(seed)))
        assert normalise(split.decode()) == normalise(out.decode())


@pytest.mark.parametrize("name", TRANSCRIPTS)
async def test_the_anthropic_sdk_accepts_the_stream(name: str) -> None:
    out, usage = translate([(STREAMS / f"{name}.sse").read_bytes()])
    message = await sdk_final_message(out)
    final = check_grammar(out)[-2][1]
    assert message.stop_reason == final["delta"]["stop_reason"]
    assert message.usage.output_tokens == usage.output_tokens
    for block in message.content:
        if block.type == "tool_use":
            assert isinstance(block.input, dict) and block.input


async def test_parallel_calls_at_index_zero_become_separate_blocks_with_minted_ids() -> None:
    out, _ = translate([(STREAMS / "parallel-calls.sse").read_bytes()])
    message = await sdk_final_message(out)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    calls = message.content[1:]
    assert [c.input for c in calls] == [{"file_path": "/tmp/a.py"}, {"file_path": "/tmp/b.py"}]
    assert calls[0].id != calls[1].id and all(c.id.startswith("toolu_") for c in calls)
    assert message.stop_reason == "tool_use"


async def test_a_signature_precedes_its_call_as_a_prefixed_thinking_block() -> None:
    out, _ = translate([(STREAMS / "one-call.sse").read_bytes()])
    message = await sdk_final_message(out)
    thinking, call = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Let me check."
    assert thinking.signature == "ccm.gemini.CiQBjz1rX2FiY2RlZg=="
    assert call.type == "tool_use" and call.id == "call-7f2a"

    out, _ = translate([(STREAMS / "calls-signed-no-thoughts.sse").read_bytes()])
    message = await sdk_final_message(out)
    assert [b.type for b in message.content] == ["thinking", "tool_use", "tool_use"]
    assert message.content[0].thinking == "" and message.content[0].signature == "ccm.gemini.U0lHLTE="


def test_usage_subtracts_cached_tokens_and_counts_thoughts_as_output() -> None:
    _, usage = translate([(STREAMS / "cached-usage.sse").read_bytes()])
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (20000 - 16384, 16384, 10)


async def test_safety_blocks_are_refusals_with_a_visible_reason() -> None:
    message = await sdk_final_message(translate([(STREAMS / "safety-block.sse").read_bytes()])[0])
    assert message.stop_reason == "refusal"
    assert message.content[0].text == "[Gemini declined to answer: PROHIBITED_CONTENT]"
    message = await sdk_final_message(translate([(STREAMS / "safety-finish.sse").read_bytes()])[0])
    assert message.stop_reason == "refusal" and message.content[0].text == "Here is how"


async def test_grounding_becomes_web_search_result_blocks() -> None:
    message = await sdk_final_message(translate([(STREAMS / "google-search.sse").read_bytes()])[0])
    kinds = [b.type for b in message.content]
    assert kinds == ["text", "server_tool_use", "web_search_tool_result"]
    assert message.content[1].input == {"query": "python lark parser"}
    assert message.content[2].tool_use_id == message.content[1].id
    assert [r.title for r in message.content[2].content] == ["github.com", "lark-parser.readthedocs.io"]
    assert message.stop_reason == "end_turn"


def test_malformed_function_call_is_a_retryable_protocol_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        translate([(STREAMS / "error-malformed-call.sse").read_bytes()])
    assert (caught.value.status, caught.value.reason) == (502, "protocol")
    assert "MALFORMED_FUNCTION_CALL" in caught.value.message


def test_an_error_object_mid_stream_is_raised_with_its_status() -> None:
    with pytest.raises(UpstreamError) as caught:
        translate([(STREAMS / "error-midstream.sse").read_bytes()])
    assert (caught.value.status, caught.value.error_type) == (529, "overloaded_error")
    assert "overloaded" in caught.value.message


def test_a_stream_cut_before_its_finish_reason_is_an_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        translate([(STREAMS / "error-truncated.sse").read_bytes()])
    assert (caught.value.status, caught.value.reason) == (502, "truncated")


def test_malformed_json_in_a_data_line_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        translate([b'data: {"candidates": [\r\n\r\n'])
    assert caught.value.reason == "protocol"
