"""Responses event streams (tests/providers/golden/responses/streams/*.sse, in the API's documented event shapes)
→ Anthropic events: golden files, the §3 grammar, random byte splits, the official SDK's accumulator, failures."""

from __future__ import annotations

import random

import pytest

from ccm.errors import UpstreamError
from ccm.providers.base import Usage
from ccm.providers.responses.reply import ResponsesReader, read_response
from ccm.providers.responses.request import SIGNATURE_PREFIX
from tests.fakes.fake_responses import FakeResponses, call_item, message_item, reasoning_item
from tests.fakes.fake_responses import _frame as stream_frame
from tests.providers.translation_checks import (
    GOLDEN,
    assert_golden,
    check_grammar,
    normalise,
    random_splits,
    relay,
    sdk_final_message,
)

STREAMS = GOLDEN / "responses" / "streams"
TRANSCRIPTS = sorted(p.stem for p in STREAMS.glob("*.sse") if not p.stem.startswith("error-"))


def translate(pieces: list[bytes]) -> tuple[bytes, Usage]:
    usage = Usage()
    out, error = relay(ResponsesReader("openai", "claude-opus-5-5", usage), pieces)
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
        assert normalise(translate(random_splits(raw, random.Random(seed), 60))[0].decode()) == normalise(out.decode())


@pytest.mark.parametrize("name", TRANSCRIPTS)
async def test_the_anthropic_sdk_accepts_the_stream(name: str) -> None:
    out, usage = translate([(STREAMS / f"{name}.sse").read_bytes()])
    message = await sdk_final_message(out)
    assert message.stop_reason == check_grammar(out)[-2][1]["delta"]["stop_reason"]
    assert message.usage.output_tokens == usage.output_tokens


async def test_reasoning_summary_parts_become_one_thinking_block_before_the_text() -> None:
    message = await sdk_final_message(translate([(STREAMS / "reasoning-summary.sse").read_bytes()])[0])
    thinking, answer = message.content
    assert thinking.thinking == (
        "**Reading the request**\n\nThe user wants a file listing.\n\n**Choosing a tool**\n\nBash is right."
    )
    assert answer.text == "I'll list the files." and message.stop_reason == "end_turn"


async def test_function_call_arguments_stream_or_arrive_only_in_done() -> None:
    message = await sdk_final_message(translate([(STREAMS / "function-call.sse").read_bytes()])[0])
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[1].id == "call_abc123"
    assert message.content[1].input == {"command": "ls -la", "description": "List files"}
    message = await sdk_final_message(translate([(STREAMS / "function-call-args-only-in-done.sse").read_bytes()])[0])
    assert [b.input for b in message.content] == [{"file_path": "/tmp/a.py"}, {"file_path": "/tmp/b.py"}]
    assert message.stop_reason == "tool_use"


def test_usage_subtracts_cached_tokens() -> None:
    _, usage = translate([(STREAMS / "text.sse").read_bytes()])
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (1200 - 1024, 1024, 25)


async def test_incomplete_reasons() -> None:
    cut = await sdk_final_message(translate([(STREAMS / "incomplete-max-output.sse").read_bytes()])[0])
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "This answer was cut"
    filtered = await sdk_final_message(translate([(STREAMS / "incomplete-content-filter.sse").read_bytes()])[0])
    assert filtered.stop_reason == "refusal" and filtered.content == []


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [("error-failed", 500, "5xx"), ("error-event", 429, "429"), ("error-truncated", 502, "truncated")],
)
def test_failures(name: str, status: int, reason: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        translate([(STREAMS / f"{name}.sse").read_bytes()])
    assert (caught.value.status, caught.value.reason) == (status, reason)


def test_a_cut_off_argument_stream_is_completed_so_claude_code_can_parse_it() -> None:
    frames = [
        b'data: {"type":"response.output_item.added","output_index":0,'
        b'"item":{"type":"function_call","call_id":"c1","name":"Bash","arguments":""}}\n\n',
        b'data: {"type":"response.function_call_arguments.delta","output_index":0,"delta":"{\\"command\\": \\"ls"}\n\n',
        b'data: {"type":"response.output_item.done","output_index":0,'
        b'"item":{"type":"function_call","call_id":"c1","name":"Bash","arguments":"{\\"command\\": \\"ls"}}\n\n',
        b'data: {"type":"response.completed",'
        b'"response":{"status":"completed","usage":{"input_tokens":3,"output_tokens":2}}}\n\n',
    ]
    out, _ = translate(frames)
    partial = "".join(d["delta"]["partial_json"] for _, d in check_grammar(out)
                      if d.get("delta", {}).get("type") == "input_json_delta")
    assert partial == '{"command": "ls"}'


def test_non_stream_response() -> None:
    usage = Usage()
    data = {
        "status": "completed",
        "output": [reasoning_item("Think."), message_item("Running it."),
                   call_item("Bash", {"command": "ls"}, "call_1"),
                   {"type": "function_call", "call_id": "call.2", "name": "Read", "arguments": "{'file_path': '/x',}"}],
        "usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 10}, "output_tokens": 7},
    }
    message = read_response(data, "openai", "claude-opus-5-5", usage)
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    # an id Anthropic would reject is encoded, and decoded again when the history goes back (test_translate.py)
    encoded = "toolu_ccm_" + b"call.2".hex()
    assert message["content"][3] == {"type": "tool_use", "id": encoded, "name": "Read", "input": {"file_path": "/x"}}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 40 and message["usage"]["cache_read_input_tokens"] == 10
    with pytest.raises(UpstreamError):
        read_response({"status": "failed", "error": {"code": "server_error", "message": "boom"}}, "openai", "m",
                      Usage())


# --- encrypted reasoning travels through Claude Code in the thinking block's signature (issue 13, item 4) ------


def reasoning_stream(*items: dict[str, object]) -> bytes:
    """The stream the strict fake writes for these output items (a reasoning model asked for its encrypted content)."""
    fake = FakeResponses()
    output = [dict(item, id=item.get("id") or f"item_{n}") for n, item in enumerate(items)]
    response = {"id": "resp_1", "object": "response", "model": "gpt-5.5", "status": "completed", "output": output,
                "usage": fake.usage, "incomplete_details": None, "error": None}
    return b"".join(stream_frame(e) for e in fake._events(response))


def test_a_reasoning_item_with_encrypted_content_ends_its_thinking_block_with_a_signature() -> None:
    reasoning = reasoning_item("Think.", "Then act.", id="rs_7", encrypted_content="gAAAAB-secret==")
    out, _ = translate([reasoning_stream(reasoning, call_item("Bash", {"command": "ls"}, "call_1"))])
    events = check_grammar(out)
    deltas = [d["delta"] for name, d in events if name == "content_block_delta"]
    assert [d["type"] for d in deltas[:4]] == ["thinking_delta", "thinking_delta", "thinking_delta", "signature_delta"]
    assert deltas[3]["signature"] == SIGNATURE_PREFIX + '{"id":"rs_7","encrypted_content":"gAAAAB-secret=="}'


async def test_the_sdk_keeps_the_signature_claude_code_sends_back() -> None:
    reasoning = reasoning_item("Think.", id="rs_7", encrypted_content="gAAAAB-secret==")
    message = await sdk_final_message(translate([reasoning_stream(reasoning, message_item("Done."))])[0])
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "Think."
    assert thinking.signature.startswith(SIGNATURE_PREFIX)
    assert [b.type for b in message.content] == ["thinking", "text"]


def test_reasoning_with_only_encrypted_content_still_travels() -> None:
    # no summary asked for (display: omitted): the thinking block holds only the signature
    out, _ = translate([reasoning_stream(reasoning_item(id="rs_8", encrypted_content="gAAAAB-x"), message_item("Hi."))])
    blocks = [d["content_block"]["type"] for name, d in check_grammar(out) if name == "content_block_start"]
    assert blocks == ["thinking", "text"]


def test_reasoning_without_encrypted_content_has_no_signature_to_carry() -> None:
    out, _ = translate([reasoning_stream(reasoning_item("Think.", id="rs_9"), message_item("Hi."))])
    assert b"signature_delta" not in out


def test_non_stream_encrypted_reasoning() -> None:
    data = {"status": "completed", "output": [reasoning_item("Think.", id="rs_7", encrypted_content="gAAAAB-e"),
                                              message_item("Hi.")]}
    message = read_response(data, "openai", "claude-opus-5-5", Usage())
    assert message["content"][0] == {"type": "thinking", "thinking": "Think.",
                                     "signature": SIGNATURE_PREFIX + '{"id":"rs_7","encrypted_content":"gAAAAB-e"}'}
