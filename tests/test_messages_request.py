"""ccm.messages_request: every captured Claude Code request is accepted; malformed bodies get Anthropic-like 400s naming
the offending path; no input of any shape produces anything but a dict or an ApiError."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccm.errors import ApiError
from ccm.messages_request import MAX_DEPTH, MAX_VALUE_DEPTH, check_request, parse_request
from tests.conftest import fixture_names, load_fixture

BASE: dict[str, Any] = {"model": "claude-sonnet-5-5", "max_tokens": 1024,
                        "messages": [{"role": "user", "content": "hi"}]}


def with_changes(**changes: Any) -> bytes:
    body = copy.deepcopy(BASE)
    for field, value in changes.items():
        if value is DROP:
            body.pop(field, None)
        else:
            body[field] = value
    return json.dumps(body).encode()  # not orjson: its encoder refuses the deep values some tests need


DROP = object()


def with_blocks(*blocks: Any, role: str = "user") -> bytes:
    return with_changes(messages=[{"role": role, "content": list(blocks)}])


def error_of(raw: bytes, count_only: bool = False) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as caught:
        parse_request(raw, count_only=count_only)
    return caught.value.status, caught.value.error_type, caught.value.message


def nested(depth: int) -> Any:
    """A value `depth` levels deep: depth 1 is `{}`."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# --- what must be accepted ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_names())
def test_every_captured_request_validates(name: str) -> None:
    captured = load_fixture(name)
    raw = orjson.dumps(captured["body"])
    assert parse_request(raw, count_only="count_tokens" in captured["path"]) == captured["body"]


def test_count_tokens_bodies_need_no_max_tokens() -> None:
    raw = with_changes(max_tokens=DROP)
    assert parse_request(raw, count_only=True)["model"] == "claude-sonnet-5-5"
    assert error_of(raw) == (400, "invalid_request_error", "max_tokens: Field required")


@pytest.mark.parametrize(
    "raw",
    [
        with_changes(future_field={"anything": [1, 2]}, service_tier="auto", container="c1", safeguards={"x": 1}),
        with_changes(thinking={"type": "adaptive", "display": "summarized"}, output_config={"effort": "max"}),
        with_changes(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048),
        with_changes(system=[{"type": "text", "text": "be brief",
                              "cache_control": {"type": "ephemeral", "ttl": "1h"}}]),
        with_changes(messages=[{"role": "system", "content": "env"}, {"role": "user", "content": "hi", "extra": 1}]),
        with_changes(
            tools=[
                {"name": "Read", "input_schema": {"type": "object"}, "defer_loading": True, "strict": True},
                {"type": "custom", "name": "Write", "description": "w", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 8},
            ],
            tool_choice={"type": "tool", "name": "Read", "disable_parallel_tool_use": True},
        ),
        with_changes(temperature=0, top_p=0.9, top_k=5, stop_sequences=["END"], stream=False, metadata={}),
        with_blocks(
            {"type": "text", "text": "", "citations": [{"type": "char_location"}],
             "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}, "title": "t"},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c"}]}},
            {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "r"}]},
            {"type": "container_upload", "file_id": "file_2"},
        ),
        with_blocks(
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_2", "content": {"anything": True}},
            {"type": "future_server_tool_use", "whatever": 1},
            {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "n", "server_name": "s", "input": {}},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a"}},
            role="assistant",
        ),
        with_blocks(
            {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "content": [{"type": "text", "text": "ok"}]},
            {"type": "tool_result", "tool_use_id": "toolu_1"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "is_error": True,
                "content": [
                    {"type": "text", "text": "see image"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                    {"type": "tool_reference", "tool_name": "Read"},
                ],
            },
        ),
    ],
)
def test_accepts_what_anthropic_accepts(raw: bytes) -> None:
    assert parse_request(raw) == orjson.loads(raw)


def test_check_request_validates_a_parsed_body() -> None:
    check_request(orjson.loads(with_changes()))
    with pytest.raises(ApiError, match="^model: Field required$"):
        check_request(orjson.loads(with_changes(model=DROP)))


# --- what must be refused, and how -------------------------------------------------------------------------------

MALFORMED: list[tuple[bytes, str]] = [
    (with_changes(model=DROP), "model: Field required"),
    (with_changes(model=7), "model: Input should be a valid string"),
    (with_changes(model=""), "model: String should have at least 1 character"),
    (with_changes(max_tokens=DROP), "max_tokens: Field required"),
    (with_changes(max_tokens="1"), "max_tokens: Input should be a valid integer"),
    (with_changes(max_tokens=True), "max_tokens: Input should be a valid integer"),
    (with_changes(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    (with_changes(messages=DROP), "messages: Field required"),
    (with_changes(messages={"role": "user"}), "messages: Input should be a valid list"),
    (with_changes(messages=[]), "messages: at least one message is required"),
    (with_changes(messages=["hi"]), "messages.0: Input should be a valid dictionary"),
    (with_changes(messages=[{"content": "hi"}]), "messages.0.role: Field required"),
    (with_changes(messages=[{"role": "tool", "content": "x"}]),
     "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
    (with_changes(messages=[{"role": "user"}]), "messages.0.content: Field required"),
    (with_changes(messages=[{"role": "user", "content": 3}]),
     "messages.0.content: Input should be a valid string or a list of content blocks"),
    (with_blocks("hi"), "messages.0.content.0: Input should be a valid dictionary"),
    (with_blocks({"text": "hi"}), "messages.0.content.0.type: Field required"),
    (with_blocks({"type": ["text"]}), "messages.0.content.0.type: Input should be a valid string"),
    (with_blocks({"type": "text", "text": "a"}, {"type": "foo"}),
     'messages.0.content.1.type: unknown content block type "foo"'),
    (with_blocks({"type": "text"}), "messages.0.content.0.text: Field required"),
    (with_blocks({"type": "text", "text": 1}), "messages.0.content.0.text: Input should be a valid string"),
    (with_blocks({"type": "image"}), "messages.0.content.0.source: Field required"),
    (with_blocks({"type": "image", "source": "x"}), "messages.0.content.0.source: Input should be a valid dictionary"),
    (with_blocks({"type": "image", "source": {"type": "base64", "data": "x"}}),
     "messages.0.content.0.source.media_type: Field required"),
    (with_blocks({"type": "image", "source": {"type": "base64", "media_type": "image/png"}}),
     "messages.0.content.0.source.data: Field required"),
    (with_blocks({"type": "image", "source": {"type": "path"}}),
     "messages.0.content.0.source.type: Input should be 'base64', 'url' or 'file'"),
    (with_blocks({"type": "image", "source": {}}), "messages.0.content.0.source.type: Field required"),
    (with_blocks({"type": "document", "source": {"type": "content", "content": 1}}),
     "messages.0.content.0.source.content: Input should be a valid string or a list of content blocks"),
    (with_blocks({"type": "document", "source": {"type": "content", "content": [{"type": "tool_use"}]}}),
     'messages.0.content.0.source.content.0.type: content block type "tool_use" is not allowed here'),
    (with_blocks({"type": "tool_use", "name": "n", "input": {}}), "messages.0.content.0.id: Field required"),
    (with_blocks({"type": "tool_use", "id": "t", "name": "n"}), "messages.0.content.0.input: Field required"),
    (with_blocks({"type": "tool_use", "id": "t", "name": "n", "input": "{}"}),
     "messages.0.content.0.input: Input should be a valid dictionary"),
    (with_blocks({"type": "tool_result", "content": "x"}), "messages.0.content.0.tool_use_id: Field required"),
    (with_blocks({"type": "tool_result", "tool_use_id": "t", "content": 5}),
     "messages.0.content.0.content: Input should be a valid string or a list of content blocks"),
    (with_blocks({"type": "tool_result", "tool_use_id": "t", "is_error": "no"}),
     "messages.0.content.0.is_error: Input should be a valid boolean"),
    (with_blocks({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "tool_result", "tool_use_id": "u"}]}),
     'messages.0.content.0.content.0.type: content block type "tool_result" is not allowed here'),
    (with_blocks({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "bogus"}]}),
     'messages.0.content.0.content.0.type: unknown content block type "bogus"'),
    (with_blocks({"type": "thinking", "signature": "s"}), "messages.0.content.0.thinking: Field required"),
    (with_blocks({"type": "redacted_thinking"}), "messages.0.content.0.data: Field required"),
    (with_blocks({"type": "web_search_tool_result", "tool_use_id": "s"}),
     "messages.0.content.0.content: Field required"),
    (with_blocks({"type": "search_result", "source": "s", "title": "t", "content": "x"}),
     "messages.0.content.0.content: Input should be a valid list"),
    (with_blocks({"type": "mcp_tool_use", "id": "i", "name": "n", "input": {}}),
     "messages.0.content.0.server_name: Field required"),
    (with_changes(system=5), "system: Input should be a valid string or a list of text blocks"),
    (with_changes(system=[{"type": "image"}]), "system.0.type: Input should be 'text'"),
    (with_changes(system=[{"type": "text", "text": None}]), "system.0.text: Field required"),
    (with_changes(stream="yes"), "stream: Input should be a valid boolean"),
    (with_changes(temperature="hot"), "temperature: Input should be a valid number"),
    (with_changes(top_k=-1), "top_k: Input should be greater than or equal to 0"),
    (with_changes(stop_sequences="END"), "stop_sequences: Input should be a valid list"),
    (with_changes(stop_sequences=["a", 1]), "stop_sequences.1: Input should be a valid string"),
    (with_changes(metadata="u"), "metadata: Input should be a valid dictionary"),
    (with_changes(metadata={"user_id": 1}), "metadata.user_id: Input should be a valid string"),
    (with_changes(tools={"name": "x"}), "tools: Input should be a valid list"),
    (with_changes(tools=["Read"]), "tools.0: Input should be a valid dictionary"),
    (with_changes(tools=[{"input_schema": {"type": "object"}}]), "tools.0.name: Field required"),
    (with_changes(tools=[{"name": "Read"}]), "tools.0.input_schema: Field required"),
    (with_changes(tools=[{"name": "Read", "input_schema": []}]),
     "tools.0.input_schema: Input should be a valid dictionary"),
    (with_changes(tools=[{"name": "Read", "input_schema": {"type": "array"}}]),
     "tools.0.input_schema.type: Input should be 'object'"),
    (with_changes(tools=[{"name": "R", "description": 1, "input_schema": {"type": "object"}}]),
     "tools.0.description: Input should be a valid string"),
    (with_changes(tools=[{"name": "web_search", "type": 20250305}]), "tools.0.type: Input should be a valid string"),
    (with_changes(tool_choice="auto"), "tool_choice: Input should be a valid dictionary"),
    (with_changes(tool_choice={"type": "required"}),
     "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"),
    (with_changes(tool_choice={"type": "tool"}), "tool_choice.name: Field required"),
    (with_changes(tool_choice={"type": "any", "disable_parallel_tool_use": 1}),
     "tool_choice.disable_parallel_tool_use: Input should be a valid boolean"),
    (with_changes(thinking={"type": "on"}), "thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'"),
    (with_changes(thinking={"type": "enabled"}), "thinking.budget_tokens: Field required"),
    (with_changes(thinking={"type": "enabled", "budget_tokens": 100}),
     "thinking.budget_tokens: Input should be greater than or equal to 1024"),
    (with_changes(thinking={"type": "enabled", "budget_tokens": 4096}, max_tokens=4096),
     "max_tokens: must be greater than thinking.budget_tokens"),
    (with_changes(output_config="high"), "output_config: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("raw", "message"), MALFORMED, ids=[message for _, message in MALFORMED])
def test_malformed_bodies_get_a_400_naming_the_path(raw: bytes, message: str) -> None:
    assert error_of(raw) == (400, "invalid_request_error", message)


@pytest.mark.parametrize("raw", [b"", b'{"model": "m",', b"{'model': 'm'}", b'{"a": 1e999}', b"{} {}"])
def test_malformed_json_is_a_400_saying_where(raw: bytes) -> None:
    # The reason after the colon is orjson's own wording (it names the position); only the frame is ccm's.
    status, error_type, message = error_of(raw)
    assert (status, error_type) == (400, "invalid_request_error")
    assert message.startswith("The request body is not valid JSON: ") and "line 1 column" in message


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[1, 2]", "an array"), (b'"text"', "a string"), (b"null", "null"), (b"42", "a number"),
                      (b"true", "a boolean")],
)
def test_bodies_that_are_not_json_objects(raw: bytes, kind: str) -> None:
    assert error_of(raw) == (400, "invalid_request_error", f"The request body must be a JSON object, not {kind}")


def test_invalid_utf8_is_a_400() -> None:
    status, error_type, message = error_of(b'{"model": "\xff\xfe", "messages": []}')
    assert (status, error_type) == (400, "invalid_request_error")
    assert message.startswith("The request body is not valid UTF-8: ")


def test_lone_surrogate_escape_is_a_400() -> None:
    status, _, message = error_of(b'{"model": "\\ud800", "messages": []}')
    assert status == 400 and message.startswith("The request body is not valid UTF-8: ")


TOO_DEEP = f"The request body is nested too deeply: a value may nest at most {MAX_VALUE_DEPTH} levels"


@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 254, 255, 300, 900, 1023, 1024, 5000, 100_000])
def test_absurd_nesting_is_a_400_wherever_it_hides(depth: int) -> None:
    # Past orjson's decoder limit (1024) the parse fails; below it, the value decodes but orjson could not encode
    # it again (254): both must be the same clear 400, in free-form values at every level of the body.
    deep_list = b"[" * depth + b"]" * depth
    raw = b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"x":' + deep_list + b"}"
    assert error_of(raw) == (400, "invalid_request_error", TOO_DEEP)
    if depth <= 900:  # what json.dumps can still build
        value = nested(depth)
        tool_use = {"type": "tool_use", "id": "t", "name": "n", "input": value}
        for raw in (
            with_blocks(tool_use, role="assistant"),
            with_blocks({"type": "text", "text": "a", "cache_control": value}),
            with_blocks({"type": "tool_result", "tool_use_id": "t",
                         "content": [{"type": "text", "text": "a", "x": value}]}),
            with_blocks({"type": "image", "source": {"type": "url", "url": "u", "x": value}}),
            with_blocks({"type": "future_tool_result", "content": value}),
            with_changes(tools=[{"name": "n", "input_schema": {"type": "object", "properties": value}}]),
            with_changes(system=[{"type": "text", "text": "s", "x": value}]),
            with_changes(messages=[{"role": "user", "content": "x", "x": value}]),
        ):
            assert error_of(raw) == (400, "invalid_request_error", TOO_DEEP)


def test_nesting_up_to_the_limit_is_accepted_and_can_be_encoded_again() -> None:
    deepest = {"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "document",
         "source": {"type": "content", "content": [{"type": "text", "text": "a", "x": nested(MAX_VALUE_DEPTH)}]}},
    ]}
    body = parse_request(with_blocks(deepest))
    assert orjson.loads(orjson.dumps(body)) == body  # the guarantee adapters rely on: at most MAX_DEPTH levels
    assert MAX_DEPTH < 255


# --- no input of any shape escapes as anything but a dict or an ApiError ----------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
BLOCK_TYPES = ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
               "server_tool_use", "web_search_tool_result", "search_result", "container_upload", "mcp_tool_use",
               "mcp_tool_result", "tool_reference", "x_tool_result", "bogus"]
BLOCK_FIELDS = ["text", "source", "id", "name", "input", "tool_use_id", "content", "is_error", "thinking", "data",
                "signature", "title", "file_id", "tool_name", "server_name", "media_type", "url"]
blocks = st.recursive(
    st.fixed_dictionaries({"type": st.sampled_from(BLOCK_TYPES)}, optional={
        field: json_values | st.sampled_from(["base64", "url", "content", "text", "x"]) | st.dictionaries(
            st.sampled_from(["type", "data", "media_type", "url", "content"]), json_values, max_size=3)
        for field in BLOCK_FIELDS
    }),
    lambda children: st.fixed_dictionaries(
        {"type": st.sampled_from(BLOCK_TYPES)},
        optional={"content": st.lists(children, max_size=3), "source": st.fixed_dictionaries(
            {"type": st.sampled_from(["base64", "url", "content", "text", "file"])},
            optional={"content": st.lists(children, max_size=3) | json_values, "data": json_values}),
                  "tool_use_id": st.text(max_size=3), "source_": json_values},
    ),
    max_leaves=8,
)
# Mostly well-formed where the path to the interesting checks starts (model, messages, roles), anything elsewhere.
field_values = json_values | st.text(max_size=3) | st.dictionaries(st.text(max_size=3), json_values, max_size=2)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]),
         "content": st.text(max_size=5) | st.lists(blocks | json_values, max_size=4) | json_values},
    ),
    min_size=1,
    max_size=4,
)
request_like = st.fixed_dictionaries(
    {"model": st.just("claude-sonnet-5-5"), "messages": messages},
    optional={
        "max_tokens": st.integers(-2, 5000) | json_values,
        "system": st.lists(st.fixed_dictionaries({"type": st.just("text")}, optional={"text": field_values}),
                           max_size=3)
        | json_values,
        "tools": st.lists(st.fixed_dictionaries({"name": st.text(max_size=3) | json_values}, optional={
            "type": st.sampled_from(["custom", "web_search_20250305"]) | json_values,
            "input_schema": st.fixed_dictionaries({}, optional={"type": st.just("object") | json_values}) | json_values,
            "description": field_values}), max_size=3) | json_values,
        "thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "adaptive", "x"])},
                                          optional={"budget_tokens": st.integers(0, 6000) | json_values}) | json_values,
        "tool_choice": st.fixed_dictionaries({"type": st.sampled_from(["auto", "tool", "x"])},
                                             optional={"name": json_values}) | json_values,
        "stream": json_values, "temperature": json_values, "top_k": json_values, "stop_sequences": json_values,
        "metadata": json_values, "output_config": json_values, "extra": json_values,
    },
)


def outcome(raw: bytes, count_only: bool = False) -> dict[str, Any] | ApiError:
    try:
        return parse_request(raw, count_only=count_only)
    except ApiError as error:
        assert error.status == 400 and error.message
        return error


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_gives_a_dict_or_an_api_error(value: Any) -> None:
    outcome(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(request_like, st.booleans())
def test_any_request_shaped_body_gives_a_dict_or_an_api_error(body: dict[str, Any], count_only: bool) -> None:
    result = outcome(json.dumps(body).encode(), count_only)
    if isinstance(result, dict):
        orjson.dumps(result)  # what passes can always be encoded again


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_a_dict_or_an_api_error(raw: bytes) -> None:
    outcome(raw)
