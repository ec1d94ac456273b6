"""What a client reads off the socket from `ccm run` (uvicorn): an answer's head and body in one write, so one read.

uvicorn writes a response's head as soon as the app starts it; ccm's protocol (`ccm.core.server.HttpToolsOneWrite`)
holds the head for the body's write. A single write of a few hundred bytes on loopback is one segment, so the first
`recv` holds all of it; with two writes it could hold the head alone.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import orjson

from .conftest import CLIENT_KEY, Stack


def first_read(url: str, body: dict) -> bytes:
    address = urlsplit(url)
    payload = orjson.dumps(body)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"x-api-key: %s\r\ncontent-length: %d\r\n\r\n%s" % (CLIENT_KEY.encode(), len(payload), payload))
        return sock.recv(1 << 20)


def test_a_whole_answer_arrives_in_one_read(openai_stack: Stack) -> None:
    data = first_read(openai_stack.url, {"model": "claude-sonnet-4-5", "max_tokens": 64,
                                         "messages": [{"role": "user", "content": "hi"}]})
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    assert len(body) == length and orjson.loads(body)["type"] == "message"


def test_a_stream_head_arrives_with_its_first_event(openai_stack: Stack) -> None:
    data = first_read(openai_stack.url, {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                                         "messages": [{"role": "user", "content": "hi"}]})
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert b"event: message_start" in body
