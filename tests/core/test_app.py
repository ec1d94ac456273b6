"""The ASGI app through httpx.ASGITransport: endpoints, bad requests, auth, body limits."""

from __future__ import annotations

import re
import time

import httpx
import orjson
import pytest

from ccm.table import EnvRef, Literal_, Model, Price, Settings

from .conftest import make_table, message_body, respond


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert body["type"] == "error", body
    return body["error"]


async def test_messages_answers_through_the_default_rule(harness_factory):
    h = harness_factory()
    response = await h.client.post("/v1/messages?beta=true", json=message_body())
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == "Hello!"
    assert response.headers["x-ccm-model"] == "main"
    assert response.headers["x-ccm-attempts"] == "1"
    # ccm's own id, unique per request (the ledger's key), and the upstream's beside it
    assert response.headers["request-id"].startswith("req_ccm_")
    assert response.headers["x-upstream-request-id"] == "req_up_1"
    (record,) = h.records
    assert (record.status, record.rule, record.target, record.stream) == (
        200, "default", "anth/claude-upstream-1", False)
    assert record.usage is not None and (record.usage.input, record.usage.output) == (12, 5)
    assert record.usage.cache_read == 3


async def test_request_ids_are_unique_and_sort_by_time(harness_factory):
    """Time first (the ledger's unique index of request ids then grows at its end), 48 random bits after it."""
    h = harness_factory()
    ids = []
    for _ in range(3):
        ids.append((await h.client.post("/v1/messages", json=message_body())).headers["request-id"])
        time.sleep(0.002)
    assert all(re.fullmatch(r"req_ccm_[0-9a-f]{24}", i) for i in ids) and ids == sorted(ids) and len(set(ids)) == 3
    assert abs(int(ids[0][8:20], 16) / 1000 - time.time()) < 60


async def test_health_lists_providers_without_keys(harness_factory):
    h = harness_factory(environ={})
    response = await h.client.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert (health["status"], health["version"]) == ("degraded", "v-test")  # its one provider has no key
    assert health["providers"] == {"anth": {"type": "anthropic", "configured": False}}
    h = harness_factory()
    assert (await h.client.get("/health")).json()["providers"]["anth"]["configured"] is True
    assert b"sk-upstream-secret" not in (await h.client.get("/health")).content


async def test_models_lists_declared_aliases_in_anthropic_shape(harness_factory):
    table = make_table(
        models=[
            Model(name="main", provider="anth", model="claude-upstream-1"),
            Model(name="fast", provider="anth", model="claude-fast"),
            Model(name="anth/raw", provider="anth", model="raw", declared=False),
        ]
    )
    h = harness_factory(table)
    listing = (await h.client.get("/v1/models?limit=20")).json()
    assert [m["id"] for m in listing["data"]] == ["main", "fast"]
    assert {m["type"] for m in listing["data"]} == {"model"}
    assert all(m["display_name"] and m["created_at"] for m in listing["data"])
    assert (listing["has_more"], listing["first_id"], listing["last_id"]) == (False, "main", "fast")
    assert (await h.client.get("/v1/models/fast")).json()["id"] == "fast"
    assert error_of(await h.client.get("/v1/models/nope"))["type"] == "not_found_error"


async def test_models_carry_the_declared_window_and_output_cap(harness_factory):
    table = make_table(models=[Model(name="main", provider="anth", model="m", context=128_000, max_output=8192),
                               Model(name="bare", provider="anth", model="b")])
    listing = (await harness_factory(table).client.get("/v1/models")).json()["data"]
    assert (listing[0]["max_input_tokens"], listing[0]["max_tokens"]) == (128_000, 8192)
    assert "max_input_tokens" not in listing[1] and "max_tokens" not in listing[1]


async def test_count_tokens_counts_locally(harness_factory):
    h = harness_factory()
    body = {"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "hello there"}]}
    response = await h.client.post("/v1/messages/count_tokens?beta=true", json=body)
    assert response.status_code == 200
    assert response.json() == {"input_tokens": len(orjson.dumps(body["messages"])) // 4}
    assert h.upstream.seen == []


async def test_count_tokens_forwarded_to_the_named_anthropic_provider(harness_factory):
    h = harness_factory(make_table(settings=Settings(count_tokens="anth")))
    h.upstream.answers["*"] = lambda request: respond(200, {"input_tokens": 4242})
    body = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
    response = await h.client.post("/v1/messages/count_tokens", json=body)
    assert response.json() == {"input_tokens": 4242}
    (sent,) = h.upstream.seen
    assert sent.url == "http://anth.test/v1/messages/count_tokens"
    assert orjson.loads(sent.content)["model"] == "claude-upstream-1"  # the alias, resolved
    assert sent.headers["x-api-key"] == "sk-upstream-secret"


async def test_count_tokens_falls_back_to_local_when_the_provider_is_down(harness_factory):
    h = harness_factory(make_table(settings=Settings(count_tokens="anth")))
    h.upstream.answers["*"] = lambda request: respond(503, {"error": {"message": "down"}})
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    response = await h.client.post("/v1/messages/count_tokens", json=body)
    assert response.json() == {"input_tokens": len(orjson.dumps(body["messages"])) // 4}


async def test_unknown_path_is_an_anthropic_404_and_wrong_method_a_405(harness_factory):
    h = harness_factory()
    response = await h.client.get("/v2/whatever")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"
    response = await h.client.get("/v1/messages")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_of(response)["type"] == "invalid_request_error"
    assert (await h.client.post("/health")).status_code == 405


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"{not json", 400, ""),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"model": 5, "max_tokens": 10, "messages": []}', 400, "model"),
        (b'{"max_tokens": 10, "messages": []}', 400, "model"),
        (b'{"model": "m", "max_tokens": 10}', 400, "messages"),
        (b'{"model": "m", "max_tokens": "ten", "messages": []}', 400, "max_tokens"),
        (b'{"model": "m\xff\xfe", "max_tokens": 10, "messages": []}', 400, ""),
        (b"[" * 5000 + b"]" * 5000, 400, ""),
        (b'{"a":' * 300 + b"1" + b"}" * 300, 400, ""),
        (b"", 400, ""),
    ],
)
async def test_malformed_requests_get_anthropic_errors_and_the_app_keeps_serving(harness_factory, content, status,
                                                                                 needle):
    h = harness_factory()
    response = await h.client.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]
    assert "Traceback" not in response.text
    assert (await h.client.post("/v1/messages", json=message_body())).status_code == 200
    assert h.records[0].status == status


async def test_body_over_the_limit_is_413_by_content_length(harness_factory):
    h = harness_factory(make_table(settings=Settings(body_limit=1000)))
    response = await h.client.post("/v1/messages", json=message_body(system="x" * 2000))
    assert response.status_code == 413
    assert error_of(response)["type"] == "request_too_large"
    assert h.upstream.seen == []


async def test_body_over_the_limit_is_413_while_streaming_it_in(harness_factory):
    h = harness_factory(make_table(settings=Settings(body_limit=1000)))

    async def chunks():
        for _ in range(10):
            yield b"x" * 200

    # a streamed request body has no Content-Length: the limit is enforced as chunks arrive
    response = await h.client.post("/v1/messages", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert error_of(response)["type"] == "request_too_large"


async def test_auth_required_when_keys_are_declared(harness_factory):
    settings = Settings(auth=(EnvRef(name="CCM_KEY"), Literal_(value="second-key")))
    h = harness_factory(make_table(settings=settings), environ={"CCM_KEY": "ccm-inbound", "ANTH_KEY": "sk-up"})
    no_key = await h.client.post("/v1/messages", json=message_body())
    assert no_key.status_code == 401
    assert error_of(no_key)["type"] == "authentication_error"
    wrong = await h.client.post("/v1/messages", json=message_body(), headers={"x-api-key": "nope"})
    assert wrong.status_code == 401
    assert (await h.client.get("/v1/models")).status_code == 401
    assert (await h.client.get("/health")).status_code == 200
    ok = await h.client.post("/v1/messages", json=message_body(), headers={"x-api-key": "ccm-inbound"})
    assert ok.status_code == 200
    bearer = await h.client.post("/v1/messages", json=message_body(), headers={"authorization": "Bearer second-key"})
    assert bearer.status_code == 200
    # ccm's own key is never forwarded upstream: the provider's replaces it
    for sent in h.upstream.seen:
        assert sent.headers["x-api-key"] == "sk-up"
        assert "authorization" not in sent.headers


async def test_auth_declared_but_unset_lets_nobody_in(harness_factory):
    h = harness_factory(make_table(settings=Settings(auth=(EnvRef(name="CCM_KEY"),))), environ={"ANTH_KEY": "k"})
    assert (await h.client.post("/v1/messages", json=message_body(), headers={"x-api-key": ""})).status_code == 401
    assert (await h.client.post("/v1/messages", json=message_body(), headers={"x-api-key": "x"})).status_code == 401


async def test_unexpected_exception_is_a_500_without_traceback_and_serving_goes_on(harness_factory, caplog):
    h = harness_factory()
    # a bug in the app itself (here: in the token counter) must become the 500
    h.app.count_tokens = lambda body: 1 // 0
    response = await h.client.post("/v1/messages/count_tokens",
                                   json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 500
    assert error_of(response) == {"type": "api_error", "message": "internal error"}
    assert "ZeroDivisionError" in caplog.text
    assert "Traceback" not in response.text
    assert (await h.client.get("/health")).status_code == 200


async def test_the_record_is_complete_enough_to_bill_from(harness_factory):
    price = Price(input=3, output=15)
    table = make_table(models=[Model(name="main", provider="anth", model="claude-upstream-1", price=price)])
    h = harness_factory(table)
    user_id = orjson.dumps({"device_id": "d", "account_uuid": "", "session_id": "438f2556-aaaa"}).decode()
    response = await h.client.post("/v1/messages", json=message_body(metadata={"user_id": user_id}))
    assert response.status_code == 200
    (record,) = h.records
    assert record.request_id == response.headers["request-id"]
    assert (record.session_id, record.requested_model, record.table_version) == ("438f2556-aaaa",
                                                                                   "claude-sonnet-5-5", "v-test")
    assert record.caller.kind == "local" and record.price == price and record.outcome == "ok"
    (attempt,) = record.attempts
    assert (attempt.provider, attempt.model, attempt.upstream_model, attempt.status) == (
        "anth", "main", "claude-upstream-1", 200)
    assert attempt.usage == record.usage and record.usage is not None and record.usage.output == 5
    assert record.ttfb_ms is not None and record.ttfb_ms <= record.latency_ms


async def test_the_old_session_id_format_is_read_too(harness_factory):
    h = harness_factory()
    await h.client.post("/v1/messages", json=message_body(metadata={"user_id": "user_ab12_account__session_9f3c"}))
    assert h.records[0].session_id == "9f3c"
