"""Anthropic passthrough through the app: bytes untouched, the model renamed, keys replaced, streams relayed."""

from __future__ import annotations

import orjson

from ccm.providers.anthropic.reply import UsageScanner
from ccm.providers.anthropic.request import passthrough_body
from ccm.providers.base import Call, Usage
from ccm.table import Model
from tests.conftest import load_fixture

from .conftest import STREAM, anthropic_provider, make_table, message_body, respond


def fixture_request(name: str) -> tuple[bytes, dict[str, str]]:
    captured = load_fixture(name)
    return orjson.dumps(captured["body"]), {k.lower(): v for k, v in captured["headers"].items()}


async def test_body_forwarded_byte_for_byte_when_the_model_name_is_the_same(harness_factory):
    raw, headers = fixture_request("print-mode-first-turn.json")
    model = orjson.loads(raw)["model"]
    h = harness_factory(make_table(models=[Model(name="main", provider="anth", model=model)]))
    raw = raw.replace(b'"messages":', b'"messages" :')  # spacing no serialiser would produce: proves no re-encoding
    response = await h.client.post(
        "/v1/messages?beta=true", content=raw, headers={**headers, "x-api-key": "client-own-key"}
    )
    assert response.status_code == 200, response.text
    (sent,) = h.upstream.seen
    assert sent.url == "http://anth.test/v1/messages"
    assert sent.content == raw
    assert sent.headers["x-api-key"] == "sk-upstream-secret"  # the provider's key replaces the client's
    assert sent.headers["anthropic-beta"] == headers["anthropic-beta"]
    assert sent.headers["anthropic-version"] == headers["anthropic-version"]
    assert sent.headers["user-agent"] == headers["user-agent"]
    assert sent.headers["accept-encoding"] == "identity"
    assert "host" not in headers or sent.headers["host"] == "anth.test"


async def test_model_replaced_and_nothing_else_changed(harness_factory):
    raw, headers = fixture_request("bash-tool-result-turn2.json")
    h = harness_factory()
    response = await h.client.post("/v1/messages", content=raw, headers=headers)
    assert response.status_code == 200
    sent = orjson.loads(h.upstream.seen[0].content)
    original = orjson.loads(raw)
    assert sent["model"] == "claude-upstream-1"
    assert {**sent, "model": original["model"]} == original


async def test_client_key_forwarded_when_the_provider_declares_none():
    provider = anthropic_provider("anth", "http://anth.test", key=None)
    table = make_table(providers=[provider])
    from ccm.core.runtime import build_runtime

    runtime, _ = build_runtime(table, {})
    adapter = runtime.providers["anth"].adapter
    call = Call({}, b"{}", {"x-api-key": "subscription", "authorization": "Bearer oauth", "cookie": "c"}, False,
                table.models["main"])
    forwarded = dict(adapter._headers(call))
    assert forwarded["x-api-key"] == "subscription"
    assert forwarded["authorization"] == "Bearer oauth"
    assert "cookie" not in forwarded
    await runtime.providers["anth"].client.aclose()


async def test_hop_by_hop_and_transport_headers_never_forwarded(harness_factory):
    h = harness_factory()
    await h.client.post(
        "/v1/messages",
        json=message_body(),
        headers={"connection": "keep-alive, x-custom", "te": "trailers", "x-stainless-lang": "js", "x-app": "cli",
                 "proxy-authorization": "secret", "accept-encoding": "br"},
    )
    sent = h.upstream.seen[0].headers
    assert sent["x-stainless-lang"] == "js" and sent["x-app"] == "cli"
    assert "te" not in sent and "proxy-authorization" not in sent and "x-custom" not in sent
    assert sent["accept-encoding"] == "identity"
    assert sent["content-length"] == str(len(h.upstream.seen[0].content))


def test_unsigned_thinking_removed_signed_kept_and_call_body_never_mutated():
    body = message_body(
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "from another provider", "signature": ""},
                {"type": "text", "text": "a"},
            ]},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "real", "signature": "EqQB"},
                {"type": "text", "text": "b"},
            ]},
            {"role": "user", "content": "q3"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "", "signature": "ccm.gemini.c2ln"},  # minted by ccm for Gemini
                {"type": "text", "text": "c"},
            ]},
            {"role": "user", "content": "q4"},
        ]
    )
    snapshot = orjson.dumps(body)
    call = Call(body, snapshot, {}, False, Model(name="m", provider="p", model=body["model"]))
    sent = orjson.loads(passthrough_body(call))
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "a"}]
    assert sent["messages"][3] == body["messages"][3]
    assert sent["messages"][5]["content"] == [{"type": "text", "text": "c"}]
    assert orjson.dumps(body) == snapshot


def test_max_tokens_clamped_with_the_thinking_budget_below_it():
    body = message_body(max_tokens=64000, thinking={"type": "enabled", "budget_tokens": 31999})
    call = Call(body, orjson.dumps(body), {}, False, Model(name="m", provider="p", model="x", max_output=8192))
    sent = orjson.loads(passthrough_body(call))
    assert sent["max_tokens"] == 8192
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8191}
    assert body["max_tokens"] == 64000


async def test_stream_bytes_identical_to_the_upstream_and_usage_read(harness_factory):
    h = harness_factory()
    pieces = [STREAM[i : i + 37] for i in range(0, len(STREAM), 37)]  # frames split at arbitrary bytes
    h.upstream.answers["*"] = lambda request: respond(chunks=pieces, headers={"request-id": "req_stream"})
    response = await h.client.post("/v1/messages", json=message_body(stream=True))
    assert response.status_code == 200
    assert response.content == STREAM
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-upstream-request-id"] == "req_stream"
    (record,) = h.records
    assert record.stream and record.usage is not None
    assert (record.usage.input, record.usage.output, record.usage.cache_read) == (849, 47, 7)


def test_usage_scanner_only_parses_usage_frames():
    usage = Usage()
    scanner = UsageScanner(usage)
    for i in range(0, len(STREAM), 5):
        scanner.feed(STREAM[i : i + 5])
    assert (usage.input_tokens, usage.output_tokens) == (849, 47)


async def test_stream_that_starts_with_an_error_frame_is_a_real_status(harness_factory):
    h = harness_factory()
    overloaded = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    h.upstream.answers["*"] = lambda request: respond(chunks=[overloaded])
    response = await h.client.post("/v1/messages", json=message_body(stream=True))
    assert response.status_code == 529
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}


async def test_every_captured_claude_code_request_passes_through(harness_factory):
    from tests.conftest import fixture_names

    h = harness_factory()
    for name in fixture_names():
        captured = load_fixture(name)
        path = captured["path"]
        response = await h.client.post(path, content=orjson.dumps(captured["body"]), headers=captured["headers"])
        assert response.status_code == 200, (name, response.text)
        if "count_tokens" in path:
            assert response.json()["input_tokens"] > 0
        else:
            assert orjson.loads(h.upstream.seen[-1].content)["model"] == "claude-upstream-1"
    assert all(record.status == 200 for record in h.records)


async def test_subagent_tag_removed_from_a_body_forwarded_without_other_changes(harness_factory):
    # the app drops the client's bytes once it rewrites the body: the passthrough serialises the body itself
    h = harness_factory()
    tagged = "<CCM-SUBAGENT-MODEL>main</CCM-SUBAGENT-MODEL>You are a helper."
    body = message_body(model="claude-upstream-1", system=[{"type": "text", "text": tagged}])
    response = await h.client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    sent = orjson.loads(h.upstream.seen[0].content)
    assert "CCM-SUBAGENT-MODEL" not in h.upstream.seen[0].content.decode()
    assert {**sent, "system": body["system"]} == body
