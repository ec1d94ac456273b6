"""Tool schema cleaning for Gemini's legacy `parameters`: each rule, and every result accepted by the fake's
schema validation (the same allow-list and structural rules the real API enforces)."""

from __future__ import annotations

from typing import Any

import pytest

from ccm.providers.gemini.schema import clean_parameters
from tests.fakes.fake_gemini import GeminiRejected, check_schema


def cleaned(schema: dict[str, Any]) -> dict[str, Any]:
    out = clean_parameters(schema)
    assert out is not None
    check_schema(out, "parameters")
    return out


def prop(schema: dict[str, Any]) -> dict[str, Any]:
    return cleaned({"type": "object", "properties": {"x": schema}})["properties"]["x"]


def test_unknown_keywords_are_removed_at_every_depth() -> None:
    out = cleaned({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "uniqueItems": True, "items": {"type": "object", "additionalProperties": False,
                                                                       "properties": {"a": {"type": "string",
                                                                                            "$comment": "c"}}}},
            "map": {"type": "object", "propertyNames": {"type": "string"}, "additionalProperties": {"type": "string"}},
        },
    })
    assert out == {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
            "map": {"type": "object"},
        },
    }


def test_refs_are_inlined_and_cycles_stop() -> None:
    out = cleaned({
        "type": "object",
        "$defs": {"node": {"type": "object",
                           "properties": {"name": {"type": "string"}, "child": {"$ref": "#/$defs/node"}}}},
        "properties": {"root": {"$ref": "#/$defs/node", "description": "the tree"}},
    })
    root = out["properties"]["root"]
    assert root["description"] == "the tree"
    assert root["properties"]["name"] == {"type": "string"}
    assert root["properties"]["child"] == {"type": "object"}  # the recursion stops at its first repeat


def test_null_unions_become_nullable() -> None:
    assert prop({"type": ["string", "null"], "description": "d"}) == {"description": "d", "type": "string",
                                                                      "nullable": True}
    assert prop({"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "n"}) == {
        "type": "integer", "description": "n", "nullable": True,
    }
    assert prop({"anyOf": [{"type": "integer"}, {"type": "string"}]}) == {"anyOf": [{"type": "integer"},
                                                                                    {"type": "string"}]}
    assert prop({"type": ["integer", "string"]}) == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert prop({"oneOf": [{"type": "boolean"}, {"type": "null"}]}) == {"type": "boolean", "nullable": True}


def test_const_enum_and_format_rules() -> None:
    assert prop({"const": "fixed"}) == {"type": "string", "enum": ["fixed"]}
    assert prop({"type": "string", "enum": ["a", "b", None]}) == {"type": "string", "enum": ["a", "b"],
                                                                  "nullable": True}
    assert prop({"type": "integer", "enum": [1, 2], "description": "level"}) == {"type": "integer",
                                                                                 "description": "level (one of: 1, 2)"}
    assert prop({"type": "string", "format": "uri"}) == {"type": "string"}
    assert prop({"type": "string", "format": "date-time"}) == {"type": "string", "format": "date-time"}


def test_numbers_arrays_and_merges() -> None:
    assert prop({"type": "number", "exclusiveMinimum": 0, "maximum": 10, "multipleOf": 2}) == {
        "type": "number", "minimum": 0, "maximum": 10}
    assert prop({"type": "array"}) == {"type": "array", "items": {"type": "string"}}
    assert prop({"type": "array", "items": [{"type": "string"}, {"type": "integer"}]}) == {
        "type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    }
    merged = prop({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                             {"properties": {"b": {"type": "integer"}}, "required": ["b", "ghost"]}]})
    assert merged == {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                      "required": ["a", "b"]}
    assert prop({"properties": {"k": {"type": "string"}}}) == {"type": "object",
                                                               "properties": {"k": {"type": "string"}}}
    assert prop({"type": "string", "default": 3}) == {"type": "string"}


def test_tools_without_parameters_send_none() -> None:
    assert clean_parameters({"type": "object", "properties": {}}) is None
    assert clean_parameters({"type": "object"}) is None
    assert clean_parameters(None) is None


@pytest.mark.parametrize(
    ("schema", "error"),
    [
        ({"type": "object", "properties": {"a": {"type": "string", "additionalProperties": False}}},
         'Unknown name "additionalProperties"'),
        ({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}, "Proto field is not repeating"),
        ({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}},
         "should be non-empty for OBJECT type"),
        ({"type": "object", "properties": {"a": {"type": "array"}}}, "items: missing field"),
        ({"type": "object", "properties": {"a": {"type": "integer", "enum": [1]}}}, "only allowed for STRING type"),
    ],
)
def test_the_fake_rejects_what_gemini_rejects(schema: dict[str, Any], error: str) -> None:
    with pytest.raises(GeminiRejected, match=error.replace("(", r"\(")):
        check_schema(schema, "parameters")
