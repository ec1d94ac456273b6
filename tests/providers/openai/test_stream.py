"""Golden stream transcripts: raw OpenAI-compatible SSE bytes (golden/openai/streams/*.sse, written per PROTOCOL.md
§6/§8 in each vendor's dialect) → the Anthropic SSE text ccm sends (*.expected). Each transcript is also fed in
random byte splits (the output must not change) and accumulated by the official `anthropic` SDK.

Regenerate the expected files with CCM_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ccm.errors import UpstreamError
from ccm.providers.openai.reply import ReplyContext, StreamTranslator
from ccm.providers.tool_names import ToolNames
from ccm.upstream.sse import SSEDecoder
from tests.providers.translation_checks import parse_events, random_splits, relay, sdk_final_message

STREAMS = Path(__file__).parents[1] / "golden" / "openai" / "streams"
TRANSCRIPTS = sorted(p.stem for p in STREAMS.glob("*.sse"))
UPDATE = os.environ.get("CCM_UPDATE_GOLDEN") == "1"


def context() -> ReplyContext:
    return ReplyContext(
        model="claude-opus-5-5",
        names=ToolNames.of(["mcp__todo.list"]),
        message_id="msg_golden",
        stop_sequences=("###",),
        provider="up",
    )


def translate(pieces: list[bytes]) -> tuple[bytes, UpstreamError | None]:
    return relay(StreamTranslator(context()), pieces)


def render(output: bytes, error: UpstreamError | None) -> str:
    text = output.decode()
    if error is not None:
        text += f"# raised UpstreamError {error.status} {error.error_type} reason={error.reason}: {error.message}\n"
    return text


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_golden_stream(name: str) -> None:
    raw = (STREAMS / f"{name}.sse").read_bytes()
    actual = render(*translate([raw]))
    expected_path = STREAMS / f"{name}.expected"
    if UPDATE:
        expected_path.write_text(actual)
    assert actual == expected_path.read_text()


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_any_byte_split_gives_the_same_output(name: str) -> None:
    raw = (STREAMS / f"{name}.sse").read_bytes()
    whole = render(*translate([raw]))
    rng = random.Random(name)
    for _ in range(20):
        assert render(*translate(random_splits(raw, rng))) == whole
    assert render(*translate([raw[i : i + 1] for i in range(len(raw))])) == whole


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_stream_grammar(name: str) -> None:
    """PROTOCOL §3: message_start first, contiguous block indices with matching deltas, no empty deltas,
    one message_delta with a stop reason and full usage, message_stop last."""
    output, error = translate([(STREAMS / f"{name}.sse").read_bytes()])
    events = parse_events(output)
    if not events:
        assert error is not None and error.reason in ("protocol", "truncated")
        return
    assert events[0][0] == "message_start"
    usage = events[0][1]["message"]["usage"]
    assert usage == {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                     "output_tokens": 0}
    open_block: tuple[int, str] | None = None
    next_index = 0
    kinds = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}
    for kind, data in events[1:]:
        assert kind == data["type"]
        if kind == "content_block_start":
            assert open_block is None and data["index"] == next_index
            open_block = (data["index"], data["content_block"]["type"])
            next_index += 1
        elif kind == "content_block_delta":
            assert open_block is not None and data["index"] == open_block[0]
            delta = data["delta"]
            assert delta["type"] == kinds[open_block[1]]
            assert next(v for k, v in delta.items() if k != "type") != ""
        elif kind == "content_block_stop":
            assert open_block is not None and data["index"] == open_block[0]
            open_block = None
        elif kind == "message_delta":
            assert open_block is None
            assert data["delta"]["stop_reason"] in {"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"}
            assert set(data["usage"]) == set(usage)
    if error is None:
        assert [k for k, _ in events[-2:]] == ["message_delta", "message_stop"]
    else:
        assert "message_stop" not in [k for k, _ in events]


@pytest.mark.parametrize("name", [n for n in TRANSCRIPTS if not n.startswith(("error", "empty"))])
async def test_the_anthropic_sdk_accumulates_the_stream(name: str) -> None:
    output, error = translate([(STREAMS / f"{name}.sse").read_bytes()])
    assert error is None

    message = await sdk_final_message(output)
    expected = [(k, d["content_block"]) for k, d in parse_events(output) if k == "content_block_start"]
    assert [b.type for b in message.content] == [block["type"] for _, block in expected]
    for block in message.content:
        if block.type == "tool_use":
            assert isinstance(block.input, dict)
    final = parse_events(output)[-2][1]
    assert message.stop_reason == final["delta"]["stop_reason"]
    assert message.usage.output_tokens == final["usage"]["output_tokens"]


def accumulate(name: str):  # type: ignore[no-untyped-def]
    """The final message of a transcript as the SDK's own accumulator builds it."""
    from anthropic.lib.streaming._messages import accumulate_event

    output, _ = translate([(STREAMS / f"{name}.sse").read_bytes()])
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, data in parse_events(output):
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


def test_split_arguments_arrive_whole() -> None:
    message = accumulate("openai-tool-split-args")
    assert message.content[0].input == {"command": "ls -la /tmp", "description": "List files"}
    assert message.content[0].id == "call_Bx1"
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (900, 31)


def test_parallel_and_index_zero_calls_become_separate_blocks() -> None:
    message = accumulate("openai-parallel-tools")
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert [b.input for b in message.content[1:]] == [{"file_path": "/a.py"}, {"file_path": "/b.py"}]
    gemini = accumulate("gemini-calls-at-index-0")
    assert [(b.name, b.input) for b in gemini.content] == [
        ("Read", {"file_path": "/a.txt"}), ("Read", {"file_path": "/b.txt"}), ("Bash", {"command": "ls"})]
    assert len({b.id for b in gemini.content}) == 3


def test_reasoning_becomes_thinking_before_text() -> None:
    deepseek = accumulate("deepseek-reasoning-tool")
    assert [b.type for b in deepseek.content] == ["thinking", "text", "tool_use"]
    assert deepseek.content[0].thinking == "The user wants the date."
    assert deepseek.usage.cache_read_input_tokens == 2944 and deepseek.usage.input_tokens == 56
    vllm = accumulate("vllm-reasoning-and-content")
    assert [(b.type, getattr(b, "thinking", None) or b.text) for b in vllm.content] == [
        ("thinking", "Short answer. Done thinking."), ("text", "The answer is 4.")]
    assert (vllm.stop_reason, vllm.stop_sequence) == ("stop_sequence", "###")


def test_openrouter_rewritten_finish_and_cache_write() -> None:
    message = accumulate("openrouter-reasoning-comments")
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.stop_reason == "tool_use"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (100, 3000, 900)


def test_odd_finish_reasons_are_inferred() -> None:
    assert accumulate("ollama-stop-after-tools").stop_reason == "tool_use"
    assert accumulate("ollama-empty-finish").stop_reason == "end_turn"
    assert accumulate("missing-usage").stop_reason == "max_tokens"
    assert accumulate("missing-usage").usage.output_tokens == 0


def test_arguments_cut_off_by_the_output_limit_are_completed_so_claude_code_can_parse_them() -> None:
    message = accumulate("length-cut-arguments")
    assert message.content[1].input == {"file_path": "/x", "content": "hel"}
    assert message.stop_reason == "max_tokens"


def test_a_stream_that_ends_without_finish_reason_or_done_is_truncated_not_finished() -> None:
    # Ends cleanly at the HTTP level mid tool call: relayed so far, then an error, never a finished answer.
    output, error = translate([(STREAMS / "error-truncated.sse").read_bytes()])
    assert error is not None and (error.status, error.reason) == (502, "truncated")
    names = [name for name, _ in parse_events(output)]
    assert names[-1] == "content_block_delta" and "message_stop" not in names and "message_delta" not in names


def test_foreign_ids_and_names_are_mapped_for_the_client() -> None:
    message = accumulate("kimi-ids-and-late-name")
    ids = [b.id for b in message.content]
    assert ids[0] == "toolu_ccm_" + b"functions.Bash:0".hex()
    assert ids[2] == "toolu_golden_2"  # the upstream sent an empty id: minted
    assert [b.name for b in message.content] == ["Bash", "mcp__todo.list", "Read"]
    assert [b.input for b in message.content] == [{"command": "uname"}, {}, {"file_path": "/etc/hostname"}]


def test_errors() -> None:
    output, error = translate([(STREAMS / "error-first-event.sse").read_bytes()])
    assert output == b"" and error is not None and error.status == 502 and error.reason == "protocol"
    output, error = translate([(STREAMS / "error-mid-stream.sse").read_bytes()])
    assert output.startswith(b"event: message_start") and error is not None
    assert (error.status, error.error_type, error.message) == (500, "api_error", "Provider returned error")
    output, error = translate([b'data: {"choices": [{"delta": {"content": "x"}}]}\n\ndata: {"choi\n\n'])
    assert error is not None and error.reason == "protocol"  # a whole frame with broken JSON: malformed
    output, error = translate([b'data: {"choices": [{"delta": {"content": "x"}}]}\n\ndata: {"choi'])
    assert error is not None and error.reason == "truncated"  # the body ended inside its last event: cut short


def test_nothing_after_message_stop() -> None:
    translator = StreamTranslator(context())
    for event in SSEDecoder().feed(b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n'
                                   b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'):
        translator.feed(event)
    assert translator.writer.finished
    translator.writer.take()
    for event in SSEDecoder().feed(b'data: {"choices":[{"index":0,"delta":{"content":"late"}}]}\n\n'):
        translator.feed(event)
    translator.finish()
    assert translator.writer.take() == []
    assert (translator.writer.usage.input_tokens, translator.writer.usage.output_tokens) == (3, 1)
