"""Who is asking, told to OpenAI the way its API documents now (issue 13, item 7): never the raw `metadata.user_id`
(a JSON fragment since Claude Code 2.x, cut at 64 characters it was neither an id nor valid JSON), but Claude
Code's session id — the key that keeps one session's prompts in one cache bucket — and a hash of the account or
device, never the value itself."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from ccm.providers.openai.request import translate_request as chat_request
from ccm.providers.request import client_identity
from ccm.providers.responses.request import translate_request as responses_request
from ccm.table import Model
from tests.conftest import fixture_names, load_fixture
from tests.fakes.fake_responses import ResponsesRejected, check_responses_request
from tests.fakes.openai_rules import Limits, check_chat_request

SESSION = "6a0d02d3-16af-4ff7-bef1-a2df28b2de79"
CURRENT = orjson.dumps({"device_id": "d" * 64, "account_uuid": "acc-1", "session_id": SESSION}).decode()
OLD = f"user_{'e' * 64}_account_acc-1_session_{SESSION}"
CHAT = Model(name="c", provider="p", model="gpt-test")
GPT = Model(name="r", provider="p", model="gpt-5.5")


def body(user_id: Any) -> dict[str, Any]:
    return {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": user_id}}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def test_the_session_is_read_from_both_formats_and_the_user_is_only_ever_a_hash() -> None:
    current = client_identity(body(CURRENT))
    assert current.session == SESSION and current.user == digest("acc-1")
    old = client_identity(body(OLD))
    assert old.session == SESSION and old.user == digest("e" * 64)
    no_account = client_identity(body(orjson.dumps({"device_id": "dev-9", "account_uuid": "",
                                                    "session_id": "s1"}).decode()))
    assert no_account.user == digest("dev-9")
    opaque = client_identity(body("someone@example.com"))
    assert opaque.session == digest("someone@example.com") and opaque.user is None
    assert client_identity({"messages": []}).session is None
    assert client_identity(body(7)).session is None


@pytest.mark.parametrize("name", [n for n in fixture_names() if not n.startswith("count-tokens")])
def test_chat_sends_the_session_as_user_never_a_json_fragment(name: str) -> None:
    captured = load_fixture(name)["body"]
    out, _ = chat_request(captured, CHAT)
    check_chat_request(out, Limits())
    assert out["user"] == orjson.loads(captured["metadata"]["user_id"])["session_id"]
    assert "prompt_cache_key" not in out and "safety_identifier" not in out  # not every compatible server takes them


def test_chat_with_quirk_prompt_cache_key_uses_the_fields_openai_documents_now() -> None:
    out, _ = chat_request(body(CURRENT), CHAT.model_copy(update={"quirks": ("prompt_cache_key",)}))
    check_chat_request(out, Limits())
    assert (out.get("user"), out["prompt_cache_key"], out["safety_identifier"]) == (None, SESSION, digest("acc-1"))


def test_responses_sends_prompt_cache_key_and_safety_identifier() -> None:
    out = responses_request(body(CURRENT), GPT)
    check_responses_request(out)
    assert (out["prompt_cache_key"], out["safety_identifier"]) == (SESSION, digest("acc-1"))
    assert "user" not in out
    bare = responses_request({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}, GPT)
    assert "prompt_cache_key" not in bare and "safety_identifier" not in bare


def test_the_responses_fake_refuses_identifiers_over_64_characters() -> None:
    with pytest.raises(ResponsesRejected, match="safety_identifier"):
        check_responses_request({"model": "gpt-5.5", "input": "hi", "safety_identifier": "x" * 65})
