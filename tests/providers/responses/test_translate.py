"""Anthropic → OpenAI Responses request translation: a golden file per captured Claude Code request, each accepted
by the strict fake's validation (reasoning and non-reasoning models), plus the rules behind the goldens."""

from __future__ import annotations

import copy
import logging
from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseInputParam, ToolParam
from pydantic import TypeAdapter

from ccm.providers.request import reset_unsupported_warnings
from ccm.providers.responses.request import is_reasoning_model, translate_request
from ccm.table import Model
from tests.conftest import fixture_names, load_fixture
from tests.fakes.fake_responses import ResponsesRejected, check_responses_request
from tests.providers.translation_checks import GOLDEN, PNG, assert_golden, golden_json, text, user

REQUESTS = GOLDEN / "responses" / "requests"
GPT5 = Model(name="gpt", provider="openai", model="gpt-5.5", max_output=128000)
GPT41 = Model(name="gpt41", provider="openai", model="gpt-4.1", max_output=32768)


@pytest.mark.parametrize("name", fixture_names())
def test_every_captured_request_translates_to_its_golden_and_is_accepted(name: str) -> None:
    body = load_fixture(name)["body"]
    before = copy.deepcopy(body)
    translated = translate_request(body, GPT5)
    assert body == before
    check_responses_request(translated)
    check_responses_request(translate_request(body, GPT41))
    assert_golden(REQUESTS / name, golden_json(translated))


def test_strict_function_schemas_would_be_rejected_which_is_why_strict_is_off() -> None:
    translated = translate_request(load_fixture("print-mode-first-turn.json")["body"], GPT5)
    assert all(tool["strict"] is False for tool in translated["tools"])
    for tool in translated["tools"]:
        tool.pop("strict")
    with pytest.raises(ResponsesRejected, match="additionalProperties|required"):
        check_responses_request(translated)


def test_system_messages_calls_and_outputs() -> None:
    body = {
        "system": [text("x-anthropic-billing-header: cc=1"), text("Be brief.")],
        "messages": [
            user(text("look")),
            {"role": "system", "content": "Env: linux"},
            {"role": "assistant",
             "content": [text("Two calls."), {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"p": 1}},
                                              {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {}},
                                              {"type": "thinking", "thinking": "x", "signature": "s"}]},
            user({"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": True},
                 {"type": "tool_result", "tool_use_id": "toolu_1", "content": [text("see image"), PNG]},
                 {"type": "tool_result", "tool_use_id": "toolu_gone", "content": "late"},
                 text("next?")),
        ],
        "max_tokens": 8,
    }
    out = translate_request(body, GPT41)
    check_responses_request(out)
    assert out["instructions"] == "Be brief.\n\nEnv: linux"
    assert out["max_output_tokens"] == 16
    kinds = [(i["type"], i.get("role") or i.get("call_id")) for i in out["input"]]
    assert kinds == [
        ("message", "user"),
        ("message", "assistant"),
        ("function_call", "toolu_1"),
        ("function_call", "toolu_2"),
        ("function_call_output", "toolu_1"),
        ("function_call_output", "toolu_2"),
        ("message", "user"),
        ("message", "user"),
    ]
    assert out["input"][4]["output"] == [
        {"type": "input_text", "text": "see image"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
    ]
    assert out["input"][5]["output"] == "Error: boom"
    assert out["input"][6]["content"] == [{"type": "input_text", "text": "Tool result: late"}]


def test_an_interrupted_call_gets_a_placeholder_output() -> None:
    body = {"messages": [user(text("go")),
                         {"role": "assistant",
                          "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
                         user(text("never mind"))], "max_tokens": 100}
    out = translate_request(body, GPT5)
    check_responses_request(out)
    assert out["input"][2]["type"] == "function_call_output" and out["input"][3]["role"] == "user"


@pytest.mark.parametrize(
    ("model", "thinking", "effort", "expected"),
    [
        ("gpt-5.5", {"type": "adaptive", "display": "omitted"}, "medium", {"effort": "medium"}),
        ("gpt-5.5", {"type": "adaptive"}, "max", {"effort": "high", "summary": "detailed"}),
        ("o4-mini", {"type": "enabled", "budget_tokens": 31999}, None, {"effort": "high", "summary": "detailed"}),
        ("openai/gpt-5-codex", {"type": "enabled", "budget_tokens": 1024}, None,
         {"effort": "low", "summary": "detailed"}),
        ("gpt-5.5", {"type": "adaptive"}, None, None),
        ("gpt-5.5", None, "high", None),
        ("gpt-5-chat-latest", {"type": "adaptive"}, "high", None),
        ("gpt-4.1", {"type": "enabled", "budget_tokens": 8000}, "high", None),
    ],
)
def test_reasoning_only_for_reasoning_models_that_were_asked_to_think(model: str, thinking: Any, effort: Any,
                                                                      expected: Any) -> None:
    body: dict[str, Any] = {"messages": [user(text("hi"))], "max_tokens": 1000}
    if thinking:
        body["thinking"] = thinking
    if effort:
        body["output_config"] = {"effort": effort}
    out = translate_request(body, Model(name="m", provider="openai", model=model))
    assert out.get("reasoning") == expected
    check_responses_request(out)


def test_reasoning_model_rule() -> None:
    assert [is_reasoning_model(m)
            for m in ("o3", "gpt-5.1-codex-max", "codex-mini-latest", "gpt-oss-120b", "gpt-4o", "gpt-5-chat")] == [
        True, True, True, True, False, False]


def test_tools_choice_parallel_and_overrides() -> None:
    body = {
        "messages": [user(text("hi"))],
        "max_tokens": 200000,
        "tools": [{"name": "Bash", "description": "run",
                   "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "tool", "name": "Bash", "disable_parallel_tool_use": True},
        "temperature": 0.5,
        "stop_sequences": ["END"],
    }
    model = GPT5.model_copy(update={"force": (("reasoning.effort", "high"), ("text.verbosity", "low")),
                                    "drop": ("temperature",)})
    out = translate_request(body, model)
    check_responses_request(out)
    assert [t["name"] for t in out["tools"]] == ["Bash"]
    assert out["tool_choice"] == {"type": "function", "name": "Bash"} and out["parallel_tool_calls"] is False
    assert out["max_output_tokens"] == 128000 and "temperature" not in out and "stop" not in out
    assert out["reasoning"] == {"effort": "high"} and out["text"] == {"verbosity": "low"}
    assert out["store"] is False


@pytest.mark.parametrize(("choice", "expected"), [("auto", "auto"), ("any", "required"), ("none", "none")])
def test_tool_choice_kinds(choice: str, expected: str) -> None:
    body = {"messages": [user(text("hi"))], "max_tokens": 100, "tool_choice": {"type": choice},
            "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {}}}]}
    assert translate_request(body, GPT5)["tool_choice"] == expected


def test_documents_and_url_images() -> None:
    body = {"messages": [user(
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "document", "title": "spec.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
    )], "max_tokens": 100}
    out = translate_request(body, GPT5)
    check_responses_request(out)
    assert out["input"][0]["content"] == [
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
        {"type": "input_file", "filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
        {"type": "input_text", "text": "plain"},
    ]


def test_call_ids_the_reply_side_encoded_go_back_as_the_api_gave_them() -> None:
    encoded = "toolu_ccm_" + b"call.2".hex()
    body = {"max_tokens": 100, "messages": [
        user(text("read it")),
        {"role": "assistant", "content": [{"type": "tool_use", "id": encoded, "name": "Read", "input": {}}]},
        user({"type": "tool_result", "tool_use_id": encoded, "content": "ok"}),
    ]}
    items = translate_request(body, GPT5)["input"]
    assert [i.get("call_id") for i in items if i["type"].startswith("function_call")] == ["call.2", "call.2"]


# --- what the official types accept (issue 13, item 4) -------------------------------------------------------

# The `openai` SDK's own request types: what Responses-compatible servers that validate with them accept.
OFFICIAL_INPUT = TypeAdapter(ResponseInputParam)
OFFICIAL_TOOLS = TypeAdapter(list[ToolParam])
SIGNED = "ccm.responses." + orjson.dumps({"id": "rs_1", "encrypted_content": "gAAAAB-opaque=="}).decode()


def second_turn() -> dict[str, Any]:
    """A tool round trip the way Claude Code sends it back: reasoning carried in a thinking block, text, a call."""
    return {"max_tokens": 1000, "stream": True, "messages": [
        user(text("list the files")),
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should run ls.", "signature": SIGNED},
            text("Listing them."), text("One moment."),
            {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
        ]},
        user({"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"}),
        {"role": "assistant", "content": "Just a.txt."},
        user(text("thanks")),
    ]}


@pytest.mark.parametrize("name", [*fixture_names(), "second-turn"])
def test_every_translated_input_and_tool_fits_the_official_openai_types(name: str) -> None:
    body = second_turn() if name == "second-turn" else load_fixture(name)["body"]
    for model in (GPT5, GPT41):
        out = translate_request(body, model)
        OFFICIAL_INPUT.validate_python(out["input"])
        OFFICIAL_TOOLS.validate_python(out.get("tools", []))
        check_responses_request(out)


def test_assistant_text_goes_back_as_a_string_message() -> None:
    items = translate_request(second_turn(), GPT41)["input"]
    assistant = [i for i in items if i.get("role") == "assistant"]
    assert assistant == [{"type": "message", "role": "assistant", "content": "Listing them.\n\nOne moment."},
                         {"type": "message", "role": "assistant", "content": "Just a.txt."}]


def test_the_fake_rejects_output_text_parts_outside_a_complete_output_message() -> None:
    item = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}
    with pytest.raises(ResponsesRejected, match="output_text"):
        check_responses_request({"model": "gpt-4.1", "input": [item]})
    complete = {**item, "id": "msg_1", "status": "completed",
                "content": [{"type": "output_text", "text": "hi", "annotations": []}]}
    check_responses_request({"model": "gpt-4.1", "input": [complete]})


def test_encrypted_reasoning_goes_back_as_a_reasoning_item_before_its_call() -> None:
    items = translate_request(second_turn(), GPT5)["input"]
    assert [i["type"] for i in items[:4]] == ["message", "reasoning", "message", "function_call"]
    assert items[1] == {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAB-opaque==",
                        "summary": [{"type": "summary_text", "text": "I should run ls."}]}


def test_reasoning_is_sent_back_only_where_it_can_be_used() -> None:
    body = second_turn()
    # a reasoning item the API would refuse: nothing follows it in its turn
    body["messages"][3] = {"role": "assistant",
                           "content": [{"type": "thinking", "thinking": "hm", "signature": SIGNED}]}
    # thinking written by another model (Anthropic's signature, Gemini's) means nothing to OpenAI
    body["messages"][1]["content"][0]["signature"] = "EqQBCkYIBx-anthropic"
    items = translate_request(body, GPT5)["input"]
    assert all(i["type"] != "reasoning" for i in items)
    check_responses_request(translate_request(body, GPT5))


def test_the_fake_rejects_a_reasoning_item_without_its_following_item() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"}
    with pytest.raises(ResponsesRejected, match="without its required following item"):
        check_responses_request({"model": "gpt-5.5", "input": [user_item("hi"), reasoning, user_item("again")]})


def user_item(value: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": value}


@pytest.mark.parametrize(("model", "include"), [(GPT5, ["reasoning.encrypted_content"]), (GPT41, None)])
def test_reasoning_models_ask_for_their_encrypted_reasoning_and_nothing_is_stored(model: Model, include: Any) -> None:
    out = translate_request({"messages": [user(text("hi"))], "max_tokens": 100}, model)
    assert out.get("include") == include and out["store"] is False
    check_responses_request(out)


def test_the_fake_rejects_an_unknown_include() -> None:
    with pytest.raises(ResponsesRejected, match="include"):
        check_responses_request({"model": "gpt-5.5", "input": "hi", "include": ["reasoning.everything"]})


def test_document_titles_reach_the_model() -> None:
    body = {"messages": [user(
        {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
        {"type": "document", "title": "spec", "source": {"type": "url", "url": "https://example.com/spec.pdf"}},
        {"type": "document", "title": "inline", "source": {"type": "content", "content": [text("a"), text("b")]}},
    )], "max_tokens": 100}
    out = translate_request(body, GPT5)
    check_responses_request(out)
    assert out["input"][0]["content"] == [
        {"type": "input_text", "text": "notes\n\nplain"},
        {"type": "input_file", "file_url": "https://example.com/spec.pdf", "filename": "spec"},
        {"type": "input_text", "text": "inline\n\na\n\nb"},
    ]


def test_tool_schemas_lose_the_meta_schema_key_as_on_the_other_adapters() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {}}
    out = translate_request({"messages": [user(text("hi"))], "max_tokens": 100,
                             "tools": [{"name": "Bash", "input_schema": schema}]}, GPT5)
    assert out["tools"][0]["parameters"] == {"type": "object", "properties": {}}
    assert "$schema" in schema  # the client's body is untouched


def test_what_the_responses_api_cannot_take_is_said_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    body = {"messages": [user(text("hi"))], "max_tokens": 100, "stop_sequences": ["END"], "top_k": 5}
    reset_unsupported_warnings()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            out = translate_request(body, GPT5)
    assert "stop" not in out and "top_k" not in out
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "stop_sequences" in m]) == 1, said
    assert len([m for m in said if "top_k" in m]) == 1, said
    assert any("the Responses API has no stop parameter" in m for m in said), said
