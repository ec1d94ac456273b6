"""The user's own Anthropic credentials: an Anthropic provider without a key of its own forwards the client's API key
or Claude subscription (OAuth bearer and its betas) untouched; no other provider ever sees them; ccm's own inbound
key (`x-ccm-key`) and the `ccm-local` placeholder never go upstream and are never taken for a provider key.

The header sets are the real Claude Code 2.1.328's, per kind of login (tests/fixtures/…/headers/login-headers.json)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from ccm.table import EnvRef, Literal_, Model, Provider, Settings
from tests.conftest import load_fixture

from .conftest import Upstream, anthropic_provider, make_table, message_body

LOGINS = load_fixture("headers/login-headers.json")
API_KEY = {k.lower(): v for k, v in LOGINS["api_key"].items()}
OAUTH = {k.lower(): v for k, v in LOGINS["oauth"].items()}
USER_KEY = "user-own-api-key"
USER_BEARER = "Bearer user-subscription-token"
OAUTH_BETA = "oauth-2025-04-20"


def key_or_client(name: str = "ANTHROPIC_API_KEY") -> Provider:
    """`key env("ANTHROPIC_API_KEY") or client`, as routes.ccm declares it."""
    return anthropic_provider("anth", "http://anth.test", key=name, key_or_client=True)


def without_inbound(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "x-ccm-key"}


@pytest.mark.parametrize("login", ["api_key", "oauth"])
async def test_an_unset_key_or_client_forwards_either_login_untouched(harness_factory, login):
    headers = without_inbound(API_KEY if login == "api_key" else OAUTH)
    h = harness_factory(make_table(providers=[key_or_client()]), environ={})
    response = await h.client.post("/v1/messages?beta=true", json=message_body(), headers=headers)
    assert response.status_code == 200, response.text
    sent = h.upstream.seen[0].headers
    assert sent["anthropic-beta"] == headers["anthropic-beta"]  # the oauth beta included, for a subscription
    if login == "api_key":
        assert sent["x-api-key"] == USER_KEY and "authorization" not in sent
    else:
        assert sent["authorization"] == USER_BEARER and "x-api-key" not in sent


@pytest.mark.parametrize("login", ["api_key", "oauth"])
async def test_ccms_own_key_in_x_ccm_key_lets_the_login_through(harness_factory, login):
    headers = API_KEY if login == "api_key" else OAUTH
    settings = Settings(auth=(Literal_(value="inbound-secret"),))
    h = harness_factory(make_table(providers=[key_or_client()], settings=settings), environ={})
    response = await h.client.post("/v1/messages?beta=true", json=message_body(), headers=headers)
    assert response.status_code == 200, response.text
    sent = h.upstream.seen[0].headers
    assert "x-ccm-key" not in sent and "inbound-secret" not in str(sent.raw)
    assert (sent.get("x-api-key") or sent.get("authorization")) in (USER_KEY, USER_BEARER)
    wrong = {**headers, "x-ccm-key": "not-the-key"}
    assert (await h.client.post("/v1/messages", json=message_body(), headers=wrong)).status_code == 401


async def test_the_inbound_key_as_x_api_key_still_admits_and_is_not_forwarded(harness_factory):
    settings = Settings(auth=(Literal_(value="inbound-secret"),))
    h = harness_factory(make_table(settings=settings))
    response = await h.client.post("/v1/messages", json=message_body(), headers={"x-api-key": "inbound-secret"})
    assert response.status_code == 200
    assert h.upstream.seen[0].headers["x-api-key"] == "sk-upstream-secret"


async def test_a_provider_with_its_own_key_replaces_the_login_and_drops_the_oauth_beta(harness_factory):
    h = harness_factory(make_table(providers=[key_or_client("ANTH_KEY")]), environ={"ANTH_KEY": "sk-ccm-own"})
    response = await h.client.post("/v1/messages", json=message_body(), headers=without_inbound(OAUTH))
    assert response.status_code == 200, response.text
    sent = h.upstream.seen[0].headers
    assert sent["x-api-key"] == "sk-ccm-own" and "authorization" not in sent
    betas = sent["anthropic-beta"].split(",")
    assert OAUTH_BETA not in betas and "claude-code-20250219" in betas and "effort-2025-11-24" in betas


async def test_no_other_provider_ever_sees_the_clients_credentials(harness_factory):
    openai = Provider(name="oai", type="openai", url=Literal_(value="http://oai.test/v1"),
                      key=EnvRef(name="OAI_KEY"), auth="bearer")
    table = make_table(providers=[openai], models=[Model(name="main", provider="oai", model="gpt-x")])

    def answer(request: httpx.Request) -> httpx.Response:
        reply = {"id": "c", "object": "chat.completion", "model": "gpt-x", "created": 0,
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return httpx.Response(200, content=orjson.dumps(reply), headers={"content-type": "application/json"})

    for headers in (API_KEY, OAUTH):
        h = harness_factory(table, environ={"OAI_KEY": "sk-oai"}, upstream=Upstream({"*": answer}))
        response = await h.client.post("/v1/messages", json=message_body(), headers=without_inbound(headers))
        assert response.status_code == 200, response.text
        sent = h.upstream.seen[0].headers
        assert sent["authorization"] == "Bearer sk-oai"
        assert USER_KEY not in str(sent.raw) and "user-subscription-token" not in str(sent.raw)


async def test_the_placeholder_is_nobodys_key(harness_factory):
    # `ccm env` gave the shell ANTHROPIC_API_KEY=ccm-local, and `ccm run` started in it
    plain = harness_factory(make_table(providers=[anthropic_provider("anth", "http://anth.test",
                                                                     key="ANTHROPIC_API_KEY")]),
                            environ={"ANTHROPIC_API_KEY": "ccm-local"})
    health = (await plain.client.get("/health")).json()
    assert health["providers"]["anth"]["configured"] is False
    refused = await plain.client.post("/v1/messages", json=message_body(), headers={"x-api-key": "ccm-local"})
    assert refused.status_code == 424 and "ANTHROPIC_API_KEY is not set" in refused.text
    assert not plain.upstream.seen

    # with `or client`: the placeholder is neither the provider's key nor the client's
    h = harness_factory(make_table(providers=[key_or_client()]), environ={"ANTHROPIC_API_KEY": "ccm-local"})
    response = await h.client.post("/v1/messages", json=message_body(), headers={"x-api-key": "ccm-local"})
    assert response.status_code == 424 and not h.upstream.seen
    message = response.json()["error"]["message"]
    assert "ANTHROPIC_API_KEY is not set" in message and "log in to Claude Code" in message
    assert response.headers["x-should-retry"] == "false"
    login = await h.client.post("/v1/messages", json=message_body(), headers=without_inbound(OAUTH))
    assert login.status_code == 200 and h.upstream.seen[0].headers["authorization"] == USER_BEARER
