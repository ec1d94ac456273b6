"""Checks shared by the translating adapters' tests (OpenAI Chat, Gemini, Responses): golden files, feeding an
upstream transcript to a stream translator as the relay does, the PROTOCOL §3 event grammar, and the official
`anthropic` SDK accumulating a translated stream; and builders of Anthropic request pieces.

Golden files are rewritten instead of compared when `CCM_UPDATE_GOLDEN=1`. Generated ids (`msg_…`, minted
`toolu_…`/`srvtoolu_…`) are normalised first; long strings in request goldens are shortened to a prefix, their
length and a digest, so the files stay reviewable while any change still shows.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
from anthropic import AsyncAnthropic
from anthropic.types import Message

from ccm.errors import UpstreamError
from ccm.providers.base import Reply
from ccm.providers.reply import StreamTranslator, encode_events
from ccm.upstream.sse import SSEDecoder

GOLDEN = Path(__file__).parent / "golden"
_MESSAGE_ID = re.compile(r"msg_[0-9a-f]{32}")
_MINTED = re.compile(r"\b(srvtoolu|toolu)_[0-9a-f]{32}_\d+\b")  # minted from the message id


def user(*content: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(content)}


def assistant(*content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(content)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def call(id: str, name: str, **args: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": args}


def result(id: str, content: Any = "ok", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id, "content": content, **extra}


PNG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def normalise(text: str) -> str:
    return _MINTED.sub(lambda m: f"{m.group(1)}_MINTED", _MESSAGE_ID.sub("msg_ID", text))


def abbreviate(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 160:
        digest = hashlib.sha256(value.encode()).hexdigest()[:12]
        return f"{value[:60]}…[{len(value)} chars, sha256 {digest}]"
    if isinstance(value, dict):
        return {k: abbreviate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [abbreviate(v) for v in value]
    return value


def assert_golden(path: Path, actual: str) -> None:
    if os.environ.get("CCM_UPDATE_GOLDEN") == "1" or not path.exists():
        if os.environ.get("CCM_UPDATE_GOLDEN") != "1":
            raise AssertionError(f"golden file {path} is missing; run with CCM_UPDATE_GOLDEN=1 to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert actual == path.read_text(), f"{path.name} differs from its golden file (CCM_UPDATE_GOLDEN=1 rewrites it)"


def golden_json(value: Any) -> str:
    return orjson.dumps(abbreviate(value), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def relay(translator: StreamTranslator, pieces: list[bytes]) -> tuple[bytes, UpstreamError | None]:
    """What the relay does with the pieces (reads) of an upstream body: decode, translate, encode. A failure is
    returned with the output written up to it."""
    decoder = SSEDecoder()
    out: list[bytes] = []
    try:
        for piece in pieces:
            for event in decoder.feed(piece):
                translator.feed(event)
            out.append(encode_events(translator.writer.take()))
        for event in decoder.flush():
            translator.feed(event)
        translator.finish()
    except UpstreamError as exc:
        return b"".join(out) + encode_events(translator.writer.take()), exc
    return b"".join(out) + encode_events(translator.writer.take()), None


def random_splits(data: bytes, rng: random.Random, max_step: int = 40) -> list[bytes]:
    """`data` cut into pieces of 1 to `max_step` bytes, as reads of a body may cut it."""
    pieces, i = [], 0
    while i < len(data):
        step = rng.randint(1, max_step)
        pieces.append(data[i : i + step])
        i += step
    return pieces


def parse_events(sse: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in sse.decode().split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


def check_grammar(sse: bytes) -> list[tuple[str, dict[str, Any]]]:
    """PROTOCOL §3: message_start first; blocks start/delta/stop in order with contiguous indices and deltas that
    match the block type; signature_delta right before its block stops; message_delta with usage; message_stop last."""
    events = parse_events(sse)
    names = [name for name, _ in events]
    assert names[0] == "message_start", names
    assert names[-2:] == ["message_delta", "message_stop"], names
    assert names.count("message_start") == 1 and names.count("message_stop") == 1
    for name, data in events:
        assert data["type"] == name
    open_index: int | None = None
    open_type = ""
    next_index = 0
    last_delta = ""
    allowed = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta",
               "server_tool_use": "input_json_delta"}
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None, "a block started before the previous one stopped"
            assert data["index"] == next_index
            open_index, open_type, last_delta = data["index"], data["content_block"]["type"], ""
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
            kind = data["delta"]["type"]
            assert last_delta != "signature_delta", "nothing may follow a signature_delta in its block"
            assert kind == allowed.get(open_type) or (open_type == "thinking" and kind == "signature_delta"), kind
            if kind == "text_delta":
                assert data["delta"]["text"], "empty text delta"
            last_delta = kind
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected {name} between blocks")
    assert open_index is None
    usage = events[-2][1]["usage"]
    assert set(usage) >= {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}
    return events


async def sdk_final_message(sse: bytes) -> Message:
    """The message the official SDK's `messages.stream()` accumulator builds from `sse`."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    # The SDK brings its own HTTP package (httpx2), so its mock transport comes from there.
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http:
        client = AsyncAnthropic(api_key="test", base_url="http://127.0.0.1:9", http_client=http, max_retries=0)
        async with client.messages.stream(
            model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            return await stream.get_final_message()


class Frames(httpx.AsyncByteStream):
    """A streamed body delivered one frame per read, as a real upstream would."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for frame in self.frames:
            yield frame


async def drain(reply: Reply) -> bytes:
    """A streaming reply's whole output, the reply closed after."""
    assert reply.stream is not None
    out = b"".join([chunk async for chunk in reply.stream])
    await reply.aclose()
    return out
