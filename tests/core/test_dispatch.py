"""Walking the fallback chain: retryable failures move on, 4xx stops, all-fail names what was tried."""

from __future__ import annotations

import httpx

from ccm.table import Model

from .conftest import STREAM, anthropic_provider, make_table, message_body, respond


def two_model_table(**extra):
    return make_table(
        providers=[anthropic_provider("anth", "http://anth.test"),
                   anthropic_provider("backup", "http://backup.test", "BACKUP_KEY")],
        models=[
            Model(name="main", provider="anth", model="primary-model"),
            Model(name="spare", provider="backup", model="spare-model"),
        ],
        fallbacks={"main": ("spare",)},
        **extra,
    )


def failing(status: int, message: str = "nope", headers: dict[str, str] | None = None):
    return lambda request: respond(status, {"type": "error", "error": {"type": "x", "message": message}},
                                   headers=headers)


async def test_falls_back_on_5xx_before_the_stream_starts(harness_factory):
    h = harness_factory(two_model_table())
    h.upstream.answers["primary-model"] = failing(500, "boom")
    h.upstream.answers["spare-model"] = lambda request: respond(chunks=[STREAM])
    response = await h.client.post("/v1/messages", json=message_body(stream=True))
    assert response.status_code == 200
    assert response.content == STREAM
    assert response.headers["x-ccm-model"] == "spare"
    assert response.headers["x-ccm-attempts"] == "2"
    (record,) = h.records
    assert [(a.provider, a.status, a.reason) for a in record.attempts] == [("anth", 500, "5xx"), ("backup", 200, None)]
    assert record.target == "backup/spare-model"
    assert [str(r.url) for r in h.upstream.seen] == ["http://anth.test/v1/messages", "http://backup.test/v1/messages"]


async def test_falls_back_on_429(harness_factory):
    h = harness_factory(two_model_table())
    h.upstream.answers["primary-model"] = failing(429, "slow down", {"retry-after": "7"})
    response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 200
    assert response.headers["x-ccm-model"] == "spare"


async def test_4xx_never_falls_back(harness_factory):
    h = harness_factory(two_model_table())
    h.upstream.answers["primary-model"] = failing(400, "messages.0: bad block")
    response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": "messages.0: bad block"}
    assert len(h.upstream.seen) == 1


async def test_all_fail_raises_the_primary_error_listing_what_was_tried(harness_factory):
    h = harness_factory(two_model_table())
    h.upstream.answers["primary-model"] = failing(429, "rate limited", {"retry-after": "12"})
    h.upstream.answers["spare-model"] = failing(503, "overloaded")
    response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "12"
    assert response.headers["x-ccm-attempts"] == "2"
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["message"].startswith("rate limited (tried: ")
    assert "main (anth)" in error["message"] and "spare (backup)" in error["message"]
    assert [a.status for a in h.records[0].attempts] == [429, 529]


async def test_connect_failure_falls_back(harness_factory):
    h = harness_factory(two_model_table())

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    h.upstream.answers["primary-model"] = refuse
    response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 200
    assert [a.reason for a in h.records[0].attempts] == ["connect", None]


async def test_unset_provider_key_is_a_clear_error_naming_the_variable(harness_factory):
    h = harness_factory(environ={})
    response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 424
    message = response.json()["error"]["message"]
    assert "ANTH_KEY" in message and "not set" in message and "'anth'" in message
    assert h.upstream.seen == []


async def test_unset_key_on_the_primary_falls_back_to_a_configured_provider(harness_factory):
    h = harness_factory(two_model_table(), environ={"BACKUP_KEY": "sk-b"})
    response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 200
    assert response.headers["x-ccm-model"] == "spare"
    assert h.records[0].attempts[0].reason == "config"


async def test_mid_stream_failure_becomes_an_error_frame(harness_factory):
    h = harness_factory(two_model_table())
    first = STREAM.split(b"\n\n")[0] + b"\n\n"

    async def broken_body():
        yield first
        raise httpx.ReadError("connection reset")

    h.upstream.answers["primary-model"] = lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=broken_body()
    )
    response = await h.client.post("/v1/messages", json=message_body(stream=True))
    assert response.status_code == 200  # the 200 was out before the failure: it travels in-band
    assert response.content == first + (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
        b'"message":"upstream connection failed (ReadError)"}}\n\n'
    )
    assert len(h.upstream.seen) == 1  # no fallback once the client has seen the stream
    assert h.records[0].error == "api_error"
