"""The canned upstream every router is measured against: what it serves, and two ways to serve it.

Paths (every one answers any POST with the same canned body, whatever the request says):

    /openai/v1/chat/completions              an OpenAI chat completion
    /openai-stream/v1/chat/completions       an OpenAI SSE stream of 200 `data:` chunks, then `[DONE]`
    /openai-stream-short/v1/chat/completions the shortest useful one: 3 chunks (role, one delta, finish)
    /openai-slow/v1/chat/completions         the same stream, sent at SLOW_RATE bytes/s (holds a stream open)
    /anthropic/v1/messages                   an Anthropic message
    /anthropic-stream/v1/messages            an Anthropic SSE stream of 200 events
    /anthropic-stream-short/v1/messages      the shortest useful one: 6 events (one text delta)
    /anthropic/v1/messages/count_tokens      `{"input_tokens": 1234}`

`nginx_config()` writes the nginx configuration (the real run: nginx answers in tens of microseconds, provably not
the bottleneck, and the harness reports its direct figures). `serve_python()` serves the same paths from a small
asyncio server in this process, for the smoke test, where nginx may not be installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

STREAM_CHUNKS = 200
SHORT_CHUNKS = {"openai": 3, "anthropic": 6}  # the streams that tell a router's cost per chunk from its cost per stream
SLOW_RATE = 8192  # bytes/s: the 200-chunk OpenAI stream (~33 KB) then lasts ~4 s, long enough to hold 256 open at once
UPSTREAM_MODEL = "gpt-bench"


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


OPENAI_COMPLETION = _compact({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000, "model": UPSTREAM_MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
})

ANTHROPIC_MESSAGE = _compact({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
    "content": [{"type": "text", "text": "Hello from the bench upstream."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 7},
})

COUNT_TOKENS = _compact({"input_tokens": 1234})


def openai_stream(chunks: int = STREAM_CHUNKS) -> bytes:
    """`chunks` chunks: the role, content deltas, the finish with usage; then `[DONE]`."""
    def chunk(delta: dict[str, object], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, object] = {
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": UPSTREAM_MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = usage
        return b"data: " + _compact(body) + b"\n\n"

    body = [chunk({"role": "assistant", "content": ""})]
    body += [chunk({"content": f"tok{index} "}) for index in range(chunks - 2)]
    body.append(chunk({}, "stop", {"prompt_tokens": 12, "completion_tokens": chunks - 2, "total_tokens": chunks + 10}))
    return b"".join(body) + b"data: [DONE]\n\n"


def anthropic_stream(events: int = STREAM_CHUNKS) -> bytes:
    """`events` events: message_start, content_block_start, text deltas, content_block_stop, message_delta,
    message_stop."""
    def event(name: str, data: dict[str, object]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _compact({"type": name, **data}) + b"\n\n"

    deltas = events - 5
    events = [
        event("message_start", {"message": {
            "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    events += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"tok{index} "}})
               for index in range(deltas)]
    events += [
        event("content_block_stop", {"index": 0}),
        event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": deltas}}),
        event("message_stop", {}),
    ]
    return b"".join(events)


JSON_ROUTES = {
    "/openai/v1/chat/completions": OPENAI_COMPLETION,
    "/anthropic/v1/messages": ANTHROPIC_MESSAGE,
    "/anthropic/v1/messages/count_tokens": COUNT_TOKENS,
}
STREAM_ROUTES = {
    "/openai-stream/v1/chat/completions": openai_stream(),
    "/openai-stream-short/v1/chat/completions": openai_stream(SHORT_CHUNKS["openai"]),
    "/anthropic-stream/v1/messages": anthropic_stream(),
    "/anthropic-stream-short/v1/messages": anthropic_stream(SHORT_CHUNKS["anthropic"]),
}
SLOW_ROUTES = {"/openai-slow/v1/chat/completions": STREAM_ROUTES["/openai-stream/v1/chat/completions"]}
ANSWERS = {  # path -> (body, content type), for the Python upstream
    **{path: (body, b"application/json") for path, body in JSON_ROUTES.items()},
    **{path: (body, b"text/event-stream") for path, body in {**STREAM_ROUTES, **SLOW_ROUTES}.items()},
}


def nginx_config(folder: Path, port: int) -> Path:
    """Write nginx.conf (and the stream files it serves) into `folder`; returns the config's path.

    Small JSON answers are `return` literals (nginx's fastest path). Stream bodies are too long for a config
    literal, so they are files; nginx's static handler refuses POST with 405, and `error_page 405 =200 $uri`
    serves the file anyway. One worker process: the routers get the other core."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    files = folder / "files"
    locations = []
    for path, body in JSON_ROUTES.items():
        literal = body.decode().replace("\\", "\\\\").replace("'", "\\'")
        locations.append(f"location = {path} {{ default_type application/json; return 200 '{literal}'; }}")
    for path, body in {**STREAM_ROUTES, **SLOW_ROUTES}.items():
        target = files / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        rate = f" limit_rate {SLOW_RATE};" if path in SLOW_ROUTES else ""
        locations.append(f"location = {path} {{ default_type text/event-stream; error_page 405 =200 $uri;{rate} }}")
    config = folder / "nginx.conf"
    body_rules = "\n        ".join(locations)
    # run as root, nginx hands its worker to `nobody`, who cannot read files under root's home: keep the same user
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    config.write_text(f"""daemon off;
{user}worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/tmp_body;
    proxy_temp_path {folder}/tmp_proxy;
    fastcgi_temp_path {folder}/tmp_fastcgi;
    uwsgi_temp_path {folder}/tmp_uwsgi;
    scgi_temp_path {folder}/tmp_scgi;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    tcp_nodelay on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {files};
        {body_rules}
    }}
}}
""")
    return config


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One keep-alive connection of the Python upstream: read each request whole, answer with the canned body."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0]
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), 0)
            await reader.readexactly(length)
            status = b"200 OK" if path in ANSWERS else b"404 Not Found"
            body, kind = ANSWERS.get(path, (b'{"error":"not found"}', b"application/json"))
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: " + kind + b"\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def serve_python() -> AsyncIterator[str]:
    """Serve the canned paths on 127.0.0.1 (a free port) for the block's duration; yields the base URL."""
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
