"""Messages that help: an upstream refusal that a known quirk fixes says which quirk to declare."""

from __future__ import annotations

import logging

import httpx
import orjson

from ccm.table import EnvRef, Literal_, Model, Provider

from .conftest import Upstream, make_table, message_body

DEEPSEEK_400 = {"error": {"message": "Missing `reasoning_content` field in the assistant message at message index 2. "
                                     "For more information, please refer to https://api-docs.deepseek.com/guides",
                          "type": "invalid_request_error", "param": None, "code": "invalid_request_error"}}


def deepseek_table(quirks: tuple[str, ...] = ()):
    provider = Provider(name="deepseek", type="openai", url=Literal_(value="http://ds.test/v1"),
                        key=EnvRef(name="DS_KEY"), auth="bearer")
    model = Model(name="thinker", provider="deepseek", model="deepseek-reasoner", quirks=quirks)  # type: ignore[arg-type]
    return make_table(providers=[provider], models=[model], default="thinker")


def refuse(request: httpx.Request) -> httpx.Response:
    return httpx.Response(400, content=orjson.dumps(DEEPSEEK_400), headers={"content-type": "application/json"})


async def test_deepseeks_reasoning_refusal_names_the_quirk(harness_factory, caplog):
    h = harness_factory(deepseek_table(), environ={"DS_KEY": "sk-ds"}, upstream=Upstream({"*": refuse}))
    with caplog.at_level(logging.INFO, logger="ccm"):
        response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("Missing `reasoning_content` field")
    assert "add `quirks replay_reasoning` to model `thinker`" in message
    assert "quirks replay_reasoning" in caplog.text  # the attempt's log line says it too


async def test_no_hint_when_the_quirk_is_declared(harness_factory):
    h = harness_factory(deepseek_table(("replay_reasoning",)), environ={"DS_KEY": "sk-ds"},
                        upstream=Upstream({"*": refuse}))
    response = await h.client.post("/v1/messages", json=message_body())
    assert response.status_code == 400 and "ccm hint" not in response.json()["error"]["message"]


async def test_health_is_degraded_when_a_routed_provider_has_no_key(harness_factory):
    unrouted = Provider(name="idle", type="openai", url=Literal_(value="http://idle.test/v1"),
                        key=EnvRef(name="IDLE_KEY"), auth="bearer")
    table = deepseek_table()
    table = table.model_copy(update={"providers": {**table.providers, "idle": unrouted}})
    ok = harness_factory(table, environ={"DS_KEY": "sk-ds"})
    assert (await ok.client.get("/health")).json()["status"] == "ok"  # the unused provider does not count
    h = harness_factory(table, environ={})
    health = (await h.client.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["reasons"] == ["provider deepseek is not configured: environment variable DS_KEY is not set"]


async def test_the_request_line_names_the_model_a_count_tokens_request_asked_for(harness_factory):
    h = harness_factory()
    response = await h.client.post("/v1/messages/count_tokens",
                                   json={"model": "claude-haiku-5-5", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert h.records[-1].requested_model == "claude-haiku-5-5"
