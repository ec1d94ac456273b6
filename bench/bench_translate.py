"""Timings of the translating adapters' hot paths: upstream stream bytes → Anthropic SSE bytes, per chunk, and a
Claude Code request translated and serialised for the upstream.

Run from the repository root: .venv/bin/python -m bench.bench_translate   (not run in CI; prints best-of-N timings)

Each stream is a list of network reads holding one upstream event each (the worst case for per-read overhead), fed
through what the adapter's relay runs per read: SSE decoding, the translator, and encoding the Anthropic frames.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import orjson

from ccm.providers.base import Usage
from ccm.providers.gemini.reply import GeminiReader
from ccm.providers.gemini.request import translate_request as gemini_request
from ccm.providers.openai.reply import ReplyContext, StreamTranslator, translate_response
from ccm.providers.openai.request import translate_request as openai_request
from ccm.providers.reply import encode_events
from ccm.providers.responses.reply import ResponsesReader
from ccm.providers.responses.request import translate_request as responses_request
from ccm.table import Model
from ccm.upstream.sse import SSEDecoder
from tests.conftest import FIXTURES

BIG_REQUEST = "bash-tool-result-turn2.json"
CHUNKS = 200


def best_of(run: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def show(label: str, seconds: float, per: int = 1, unit: str = "") -> None:
    suffix = f" per {unit}" if unit else ""
    print(f"{label:<58} {seconds * 1e6 / per:>9.2f} µs{suffix}")


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


# --- upstream streams ---------------------------------------------------------------------------------------------


def openai_text_stream() -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-b",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    reads = [chunk({"role": "assistant", "content": ""})]
    reads += [chunk({"content": f"tok{i} "}) for i in range(CHUNKS - 2)]
    reads.append(chunk({}, "stop"))
    reads.append(sse({"id": "chatcmpl-b", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 198}}))
    return reads + [b"data: [DONE]\n\n"]


def openai_tool_stream() -> list[bytes]:
    def chunk(call: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({"id": "chatcmpl-b", "choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                                     "finish_reason": finish}]})

    reads = [chunk({"index": 0, "id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": ""}})]
    reads.append(chunk({"index": 0, "function": {"arguments": '{"command": "'}}))
    reads += [chunk({"index": 0, "function": {"arguments": f"echo {i}; "}}) for i in range(CHUNKS - 3)]
    reads.append(chunk({"index": 0, "function": {"arguments": '"}'}}, "tool_calls"))
    return reads + [b"data: [DONE]\n\n"]


def gemini_text_stream() -> list[bytes]:
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 1}
    reads = [sse({"candidates": [{"content": {"role": "model", "parts": [{"text": f"tok{i} "}]}}],
                  "usageMetadata": usage}) for i in range(CHUNKS - 1)]
    last = {"content": {"role": "model", "parts": [{"text": "end"}]}, "finishReason": "STOP"}
    reads.append(sse({"candidates": [last], "usageMetadata": usage}))
    return reads


def responses_text_stream() -> list[bytes]:
    def event(name: str, data: dict[str, Any]) -> bytes:
        return sse({"type": name, **data}, name)

    reads = [event("response.output_item.added", {"output_index": 0, "item": {"type": "message", "role": "assistant"}})]
    reads += [event("response.output_text.delta", {"output_index": 0, "content_index": 0, "delta": f"tok{i} "})
              for i in range(CHUNKS - 2)]
    reads.append(event("response.completed", {"response": {"status": "completed",
                                                           "usage": {"input_tokens": 12, "output_tokens": 198}}}))
    return reads


# --- what the relay runs per read ---------------------------------------------------------------------------------


def run_openai(reads: list[bytes]) -> bytes:
    translator = StreamTranslator(ReplyContext(model="claude-opus-5-5", provider="bench"))
    return run_translator(reads, translator)


def run_translator(reads: list[bytes], translator: Any) -> bytes:
    decoder = SSEDecoder()
    writer = translator.writer
    out: list[bytes] = []
    for read in reads:
        for event in decoder.feed(read):
            translator.feed(event)
        if events := writer.take():
            out.append(encode_events(events))
    for event in decoder.flush():
        translator.feed(event)
    translator.finish()
    out.append(encode_events(writer.take()))
    return b"".join(out)


def main() -> None:
    print(f"streams: {CHUNKS} upstream events, one per network read\n")
    for label, reads, make in [
        ("OpenAI chat, text deltas", openai_text_stream(), None),
        ("OpenAI chat, one tool call's argument fragments", openai_tool_stream(), None),
        ("Gemini, text parts", gemini_text_stream(), lambda: GeminiReader("bench", "claude-opus-5-5", Usage())),
        ("Responses, output_text deltas", responses_text_stream(),
         lambda: ResponsesReader("bench", "claude-opus-5-5", Usage())),
    ]:
        run = (lambda r=reads: run_openai(r)) if make is None else (lambda r=reads, m=make: run_translator(r, m()))
        show(label, best_of(run, 200), len(reads), "read")

    body = orjson.loads((FIXTURES / BIG_REQUEST).read_bytes())["body"]
    raw = orjson.dumps(body)
    model = Model(name="bench", provider="bench", model="gpt-bench", max_output=32000)
    gemini = Model(name="bench", provider="bench", model="gemini-2.5-pro", max_output=32000)
    print(f"\nrequest: {BIG_REQUEST}, {len(raw):,} bytes, translated and serialised")
    show("OpenAI chat", best_of(lambda: orjson.dumps(openai_request(body, model)[0]), 500))
    show("OpenAI chat, from the client's bytes (parse included)",
         best_of(lambda: orjson.dumps(openai_request(orjson.loads(raw), model)[0]), 500))
    show("Gemini", best_of(lambda: orjson.dumps(gemini_request(body, gemini)), 500))
    show("Responses", best_of(lambda: orjson.dumps(responses_request(body, model)), 500))

    completion = {"id": "c", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "reasoning_content": "need ls",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Bash",
                                                                         "arguments": '{"command": "ls"}'}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20}}
    print("\nnon-stream reply")
    show("OpenAI chat completion → message bytes", best_of(
        lambda: orjson.dumps(translate_response(completion, ReplyContext(model="claude-opus-5-5"), Usage())), 2000))


if __name__ == "__main__":
    main()
