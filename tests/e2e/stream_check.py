"""A strict reader of Anthropic SSE streams as a client receives them (PROTOCOL.md §3).

`read_stream(raw)` decodes the bytes and asserts the event grammar the SDK and Claude Code rely on: every frame has
an `event:` name equal to its data's `type`; `message_start` first; blocks opened at contiguous indices from 0, one
at a time, deltas matching the open block's type; `message_delta` with a stop reason and `output_tokens` after the
last block; `message_stop` last, nothing after it. It returns the accumulated message (content with tool inputs
parsed) so tests can compare what the client got.
"""

from __future__ import annotations

import json
from typing import Any

from ccm.upstream.sse import SSEDecoder

DELTA_FOR = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}


def read_stream(raw: bytes) -> dict[str, Any]:
    decoder = SSEDecoder()
    frames = [*decoder.feed(raw), *decoder.flush()]
    events = []
    for frame in frames:
        data = json.loads(frame.data)
        assert frame.event == data["type"], f"event name {frame.event!r} does not match data type {data['type']!r}"
        if frame.event != "ping":
            events.append(data)
    assert events and events[0]["type"] == "message_start", f"stream must open with message_start: {events[:1]}"
    assert events[-1]["type"] == "message_stop", f"stream must end with message_stop: {events[-1:]}"
    message = dict(events[0]["message"], content=[])
    open_index: int | None = None
    partial_json = ""
    stopped = False
    for event in events[1:-1]:
        kind = event["type"]
        assert kind != "error", f"error event in the stream: {event}"
        assert not stopped, f"{kind} after message_delta"
        if kind == "content_block_start":
            assert open_index is None, "a block opened before the previous one stopped"
            assert event["index"] == len(message["content"]), f"block index {event['index']} is not contiguous"
            open_index = event["index"]
            message["content"].append(dict(event["content_block"]))
            partial_json = ""
        elif kind == "content_block_delta":
            assert event["index"] == open_index, "delta for a block that is not open"
            block, delta = message["content"][open_index], event["delta"]
            if delta["type"] == "signature_delta":
                assert block["type"] == "thinking"
                block["signature"] = delta["signature"]
                continue
            assert delta["type"] == DELTA_FOR[block["type"]], f"{delta['type']} inside a {block['type']} block"
            if block["type"] == "tool_use":
                partial_json += delta["partial_json"]
            else:
                field = block["type"]
                block[field] = block.get(field, "") + delta[field]
        elif kind == "content_block_stop":
            assert event["index"] == open_index, "stop for a block that is not open"
            block = message["content"][open_index]
            if block["type"] == "tool_use":
                block["input"] = json.loads(partial_json) if partial_json else {}
            elif block["type"] in ("text", "thinking"):
                assert block[block["type"]], f"empty {block['type']} block"
            open_index = None
        elif kind == "message_delta":
            assert open_index is None, "message_delta while a block is open"
            assert event["delta"]["stop_reason"], "message_delta without stop_reason"
            assert isinstance(event["usage"]["output_tokens"], int)
            message["stop_reason"] = event["delta"]["stop_reason"]
            message["usage"] = {**message["usage"], **event["usage"]}
            stopped = True
        else:
            raise AssertionError(f"unexpected event {kind}")
    assert stopped, "stream ended without message_delta"
    return message
