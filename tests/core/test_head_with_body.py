"""`_HeadWithBody`, the transport wrapper under uvicorn: a response's head leaves with the next write, or alone at
the end of the event loop's turn; nothing else is held."""

from __future__ import annotations

import asyncio

from ccm.core.server import _HeadWithBody


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_the_head_leaves_with_the_body() -> None:
    recorder = Recorder()
    transport = _HeadWithBody(recorder)  # type: ignore[arg-type]
    transport.write(HEAD)
    assert recorder.writes == []
    transport.write(b"ok")
    assert recorder.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)
    assert recorder.writes == [HEAD + b"ok"]  # the end of the turn finds nothing held


async def test_a_head_alone_leaves_at_the_end_of_the_turn() -> None:
    recorder = Recorder()
    transport = _HeadWithBody(recorder)  # type: ignore[arg-type]
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert recorder.writes == [HEAD]
    transport.write(b"data: 1\n\n")  # a stream's later event: written straight away
    assert recorder.writes == [HEAD, b"data: 1\n\n"]


async def test_closing_sends_a_held_head_first_and_the_rest_passes_through() -> None:
    recorder = Recorder()
    transport = _HeadWithBody(recorder)  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.close()
    assert recorder.writes == [HEAD] and recorder.closed and transport.is_closing()
    assert transport.get_extra_info("peername") == "info:peername"
