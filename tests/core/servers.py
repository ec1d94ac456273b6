"""Real servers on 127.0.0.1 for the core's tests: any ASGI app served by hypercorn in a background thread (bound
with ccm's own `bind`/`hypercorn_config`, port 0), and a tiny scripted Anthropic upstream that streams on cue and
notices when its client goes away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from ccm.core.server import bind, hypercorn_config


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL."""
    from hypercorn.asyncio import serve

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = hypercorn_config(sock)
    config.graceful_timeout = 1.0
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait))
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"server-{port}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    assert not failure, failure


MESSAGE_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":'
    b'"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,'
    b'"output_tokens":1}}}\n\n'
)
REST = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
    b'"text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


class GatedUpstream:
    """An Anthropic upstream that sends `message_start`, then waits for `release` (a threading.Event, set by the
    test) before the rest. While it waits it watches its connection: `saw_disconnect` is set when ccm hangs up."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.saw_disconnect = threading.Event()
        self.finished = threading.Event()
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if not orjson.loads(body).get("stream"):
            answer = orjson.dumps({"type": "message", "content": [{"type": "text", "text": "hi"}], "usage": {}})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": MESSAGE_START, "more_body": True})
        watcher = asyncio.ensure_future(receive())
        while not self.release.is_set():
            if watcher.done():
                if watcher.result()["type"] == "http.disconnect":
                    self.saw_disconnect.set()
                    return
                watcher = asyncio.ensure_future(receive())
            await asyncio.sleep(0.01)
        watcher.cancel()
        await send({"type": "http.response.body", "body": REST})
        self.finished.set()
