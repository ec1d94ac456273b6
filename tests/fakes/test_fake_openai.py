"""FakeOpenAI on its own, through httpx: it accepts what OpenAI accepts, rejects what OpenAI rejects (in OpenAI's
error shape), streams in OpenAI's chunk format, and performs every scripted fault."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ccm.upstream.sse import SSEDecoder

from . import (
    FakeOpenAI,
    Hang,
    Reply,
    Status,
    StreamFault,
    ToolCall,
    malformed_json,
    malformed_sse,
    retry_later,
    serve,
    truncated_json,
    wrong_content_type,
)

AUTH = {"authorization": "Bearer sk-fake-openai"}


def chat(url: str, body: dict[str, Any], **options: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, **options)


def round_trip() -> dict[str, Any]:
    """A valid conversation with a tool call answered by a tool message."""
    return {
        "model": "gpt-fake",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "run it"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
            {"role": "user",
             "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}}]},
        ],
        "tools": [{"type": "function",
                   "function": {"name": "Bash", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "auto",
        "max_tokens": 100,
    }


def events(response: httpx.Response) -> list[str]:
    decoder = SSEDecoder()
    return [e.data for e in [*decoder.feed(response.content), *decoder.flush()]]


def test_accepts_a_valid_tool_round_trip(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    response = chat(url, round_trip())
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": fake.default.text, "refusal": None}
    assert fake.rejections == []
    assert fake.chat_requests()[0].json == round_trip()


def _drop_model(b: dict[str, Any]) -> None:
    del b["model"]


def _tool_first(b: dict[str, Any]) -> None:
    b["messages"].insert(1, {"role": "tool", "tool_call_id": "call_1", "content": "x"})


def _unanswered(b: dict[str, Any]) -> None:
    del b["messages"][3]


def _user_between(b: dict[str, Any]) -> None:
    b["messages"].insert(3, {"role": "user", "content": "wait"})


def _second_call_unanswered(b: dict[str, Any]) -> None:
    b["messages"][2]["tool_calls"].append(
        {"id": "call_2", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}
    )


REJECTED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "model missing": (_drop_model, "model"),
    "messages empty": (lambda b: b.update(messages=[]), "messages"),
    "messages not a list": (lambda b: b.update(messages="hi"), "messages"),
    "unknown role": (lambda b: b["messages"][0].update(role="human"), "messages[0].role"),
    "tool before any tool_calls": (_tool_first, "messages[1].role"),
    "tool_call never answered": (_unanswered, "messages"),
    "user message before the tool answer": (_user_between, "messages"),
    "one of two calls unanswered": (_second_call_unanswered, "messages"),
    "wrong tool_call_id": (lambda b: b["messages"][3].update(tool_call_id="call_9"), "messages[3].tool_call_id"),
    "empty assistant content beside tool_calls": (lambda b: b["messages"][2].update(content=""), "messages[2].content"),
    "empty content parts": (lambda b: b["messages"][1].update(content=[]), "messages[1].content"),
    "empty text part": (lambda b: b["messages"][1].update(content=[{"type": "text", "text": ""}]),
                        "messages[1].content[0].text"),
    "image in a tool message": (
        lambda b: b["messages"][3].update(content=[{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
        "messages[3].content[0].type",
    ),
    "invalid tool name": (lambda b: b["tools"][0]["function"].update(name="fs.read"), "tools[0].function.name"),
    "tool name too long": (lambda b: b["tools"][0]["function"].update(name="a" * 65), "tools[0].function.name"),
    "tool type not function": (lambda b: b["tools"][0].update(type="web_search_20250305"), "tools[0].type"),
    "parameters not an object schema": (
        lambda b: b["tools"][0]["function"].update(parameters={"type": "string"}),
        "tools[0].function.parameters",
    ),
    "tool_choice invalid": (lambda b: b.update(tool_choice="any"), "tool_choice"),
    "tool_choice names a missing function": (
        lambda b: b.update(tool_choice={"type": "function", "function": {"name": "Read"}}),
        "tool_choice",
    ),
    "tool_choice without tools": (lambda b: b.pop("tools"), "tool_choice"),
    "max_tokens above the cap": (lambda b: b.update(max_tokens=32000), "max_tokens"),
    "max_tokens and max_completion_tokens": (lambda b: b.update(max_completion_tokens=10), "max_tokens"),
    "stream_options without stream": (lambda b: b.update(stream_options={"include_usage": True}), "stream_options"),
    "thinking (Anthropic-only)": (lambda b: b.update(thinking={"type": "adaptive"}), "thinking"),
    "output_config (Anthropic-only)": (lambda b: b.update(output_config={"effort": "high"}), "output_config"),
    "context_management (Anthropic-only)": (lambda b: b.update(context_management={}), "context_management"),
    "system (Anthropic-only)": (lambda b: b.update(system="hi"), "system"),
    "cache_control nested": (
        lambda b: b["messages"][1]["content"][0].update(cache_control={"type": "ephemeral"}),
        "messages[1].content[0].cache_control",
    ),
    "stop with five strings": (lambda b: b.update(stop=["a", "b", "c", "d", "e"]), "stop"),
    "reasoning_effort unknown": (lambda b: b.update(reasoning_effort="max"), "reasoning_effort"),
    "user too long": (lambda b: b.update(user="u" * 65), "user"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejects_what_openai_rejects(case: str) -> None:
    mutate, param = REJECTED[case]
    body = round_trip()
    mutate(body)
    with serve(FakeOpenAI(max_output=16384)) as (url, fake):
        response = chat(url, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error["message"]
    assert fake.rejections and fake.pending == 0


def test_lenient_mode_accepts_extra_parameters() -> None:
    with serve(FakeOpenAI(strict=False)) as (url, _):
        assert chat(url, {**round_trip(), "top_k": 5, "thinking": {"type": "adaptive"}}).status_code == 200


def test_wrong_key_is_401_and_malformed_json_is_400(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, _ = fake_openai
    response = httpx.post(f"{url}/v1/chat/completions", json=round_trip(), headers={"authorization": "Bearer nope"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    response = httpx.post(f"{url}/v1/chat/completions", content=b"{",
                          headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 400 and "parse the JSON body" in response.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/completions", json={}, headers=AUTH).status_code == 404


def test_streams_openai_chunks_with_split_tool_arguments(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    calls = (ToolCall("Bash", {"command": "echo hi"}), ToolCall("Read", {"file_path": "/tmp/a b.txt"}))
    fake.script(Reply(text="Let me look.", reasoning="thinking it over", tool_calls=calls, pieces=4))
    body = {**round_trip(), "stream": True, "stream_options": {"include_usage": True}}
    response = chat(url, body)
    assert response.headers["content-type"].startswith("text/event-stream")
    data = events(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "thinking it over"
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look."
    arguments: dict[int, str] = {}
    for delta in deltas:
        for call in delta.get("tool_calls", []):
            arguments[call["index"]] = arguments.get(call["index"], "") + call["function"]["arguments"]
    assert [json.loads(a) for a in arguments.values()] == [c.arguments for c in calls]
    assert sum(1 for d in deltas for c in d.get("tool_calls", []) if c["function"]["arguments"]) > 2  # split
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 30


def test_usage_chunk_only_when_asked_and_framing_options() -> None:
    with serve(FakeOpenAI(keepalive_comments=True, crlf=True, reasoning_field="reasoning")) as (url, fake):
        fake.script(Reply(text="hi", reasoning="r"))
        response = chat(url, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert b"\r\n\r\n" in response.content and b": OPENROUTER PROCESSING" in response.content
    chunks = [json.loads(d) for d in events(response)[:-1]]
    assert all(c["choices"] for c in chunks) and "usage" not in chunks[-1]
    assert chunks[1]["choices"][0]["delta"] == {"reasoning": "r"}


def test_queue_then_default_and_callables_see_the_request(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    seen: list[int] = []

    def by_length(exchange: Any) -> Reply:
        seen.append(len(exchange.messages))
        return Reply(text=f"{len(exchange.messages)} messages")

    fake.script(Reply(text="first"), by_length)
    texts = [chat(url, round_trip()).json()["choices"][0]["message"]["content"] for _ in range(3)]
    assert texts == ["first", "5 messages", fake.default.text] and seen == [5]


@pytest.mark.parametrize("status", [429, 500, 503, 529])
def test_status_faults_carry_body_and_headers(fake_openai: tuple[str, FakeOpenAI], status: int) -> None:
    url, fake = fake_openai
    fake.script(retry_later(7, status) if status == 429 else Status(status, "boom", headers=(("x-fault", "1"),)))
    response = chat(url, round_trip())
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers.get("retry-after" if status == 429 else "x-fault") == ("7" if status == 429 else "1")


def test_hang_before_headers_ends_when_the_client_leaves(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    fake.script(Hang(30))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        chat(url, round_trip(), timeout=0.3)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while fake.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.in_flight == 0 and fake.exchanges[-1].disconnected and fake.exchanges[-1].status is None


def test_hang_then_answer(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    fake.script(Hang(0.3, then=Reply(text="late")))
    started = time.monotonic()
    assert chat(url, round_trip()).json()["choices"][0]["message"]["content"] == "late"
    assert time.monotonic() - started >= 0.3


def stream_body() -> dict[str, Any]:
    return {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def test_close_mid_stream(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    fake.script(Reply(text="abcdefgh", pieces=6, fault=StreamFault("close", after=3)))
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{url}/v1/chat/completions", json=stream_body(), headers=AUTH) as response,
    ):
        for chunk in response.iter_raw():
            received += chunk
    assert received.count(b"data: ") == 3 and bytes(fake.exchanges[-1].sent) == received


def test_truncate_ends_the_body_cleanly_before_finish_and_done(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    fake.script(Reply(text="abcdefgh", pieces=6, fault=StreamFault("truncate", after=3)), truncated_json())
    response = chat(url, stream_body())  # no transport error: the chunked body is properly terminated
    assert response.status_code == 200 and response.content.count(b"data: ") == 3
    assert b"finish_reason\":\"" not in response.content and b"[DONE]" not in response.content
    body = chat(url, round_trip())
    assert body.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        body.json()


def test_hang_mid_stream_then_drop(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    fake.script(Reply(text="abcdefgh", fault=StreamFault("hang", after=2, seconds=0.4)))
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        chat(url, stream_body())
    assert time.monotonic() - started >= 0.4


def test_trickle(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    fake.script(Reply(text="abcd", pieces=4, chunk_delay=0.1))
    arrivals: list[float] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=stream_body(), headers=AUTH) as response:
        for _ in response.iter_raw():
            arrivals.append(time.monotonic())
    assert arrivals[-1] - arrivals[0] >= 0.5  # 7 frames, 0.1 s apart


def test_malformed_and_in_stream_errors(fake_openai: tuple[str, FakeOpenAI]) -> None:
    url, fake = fake_openai
    fake.script(
        malformed_json(),
        wrong_content_type(),
        malformed_sse(),
        Reply(text="abc", fault=StreamFault("malformed", after=2)),
        Reply(text="abc", fault=StreamFault("error", after=2)),
        Status(200, body=b'{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":null}}'),
    )
    with pytest.raises(json.JSONDecodeError):
        chat(url, round_trip()).json()
    assert chat(url, round_trip()).headers["content-type"] == "text/html"
    assert chat(url, stream_body()).content == b"data: {this is not json\n\n"
    assert events(chat(url, stream_body()))[-1] == "{not json"
    assert json.loads(events(chat(url, stream_body()))[-1])["error"]["type"] == "server_error"
    response = chat(url, round_trip())
    assert response.status_code == 200 and response.json()["error"]["code"] is None


def test_stopping_the_server_ends_a_hang_at_once() -> None:
    fake = FakeOpenAI()
    fake.script(Hang(60))
    outcome: list[BaseException | httpx.Response] = []

    def waiting_client(url: str) -> None:
        try:
            outcome.append(chat(url, round_trip(), timeout=30))
        except httpx.HTTPError as error:
            outcome.append(error)

    with serve(fake) as (url, _):
        client = threading.Thread(target=waiting_client, args=(url,))
        client.start()
        while not fake.in_flight:
            time.sleep(0.01)
        started = time.monotonic()
    client.join(5)
    assert time.monotonic() - started < 3 and outcome and not client.is_alive()
