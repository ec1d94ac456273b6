"""Repair of tool-call arguments from weaker models: complete arguments (non-streaming) and streamed ones, where only
appending is possible because the fragments were already forwarded."""

from __future__ import annotations

import orjson
import pytest

from ccm.providers.tool_json import closing_suffix, parse_arguments


@pytest.mark.parametrize(("text", "expected"), [
    ('{"command": "ls"}', {"command": "ls"}),
    ("", {}),
    ("   ", {}),
    ('"{\\"a\\": 1}"', {"a": 1}),  # double-encoded
    ('{"p": "C:\\\\dir"}', {"p": "C:\\dir"}),
])
def test_valid_arguments(text: str, expected: dict) -> None:
    assert parse_arguments(text) == (expected, "valid")


@pytest.mark.parametrize(("text", "expected"), [
    ("{'command': 'ls', 'force': True}", {"command": "ls", "force": True}),
    ("{command: 'ls', timeout: None,}", {"command": "ls", "timeout": None}),
    ('{"content": "line one\nline two"}', {"content": "line one\nline two"}),
    ('```json\n{"paths": ["a", "b",]}\n```', {"paths": ["a", "b"]}),
    ('Here you go: {"command": "ls"} hope it helps', {"command": "ls"}),
    ('{"a": 1 "b": [1 2]}', {"a": 1, "b": [1, 2]}),
    ('{"file_path": "/x", "content": "unterminated', {"file_path": "/x", "content": "unterminated"}),
    ('{"a": {"b": [1, 2', {"a": {"b": [1, 2]}}),
    ('{"a": 1, "b"', {"a": 1, "b": None}),
    ('{"a":', {"a": None}),
    ('{"a": 1]}', {"a": 1}),
    ('{"a": 1}{"b": 2}', {"a": 1}),
    ("{'q': 'it\\'s \\u00e9'}", {"q": "it's é"}),
])
def test_repaired_arguments(text: str, expected: dict) -> None:
    assert parse_arguments(text) == (expected, "repaired")


@pytest.mark.parametrize("text", ["nonsense", "[1, 2]", "42", "null"])
def test_unrepairable_arguments_become_an_empty_object(text: str) -> None:
    assert parse_arguments(text) == ({}, "invalid")


@pytest.mark.parametrize(("text", "suffix"), [
    ('{"a": 1}', ""),
    ("", "{}"),
    ('{"a": "cut', '"}'),
    ('{"a": {"b": [1, 2', "]}}"),
    ('{"a":', "null}"),
    ('{"a": 1, "b', '":null}'),
    ('{"a": "}"', "}"),
    ('{"a": 1,', ""),  # only a rewrite could fix it
    ('{"a": "x\\', ""),
    ("{'a': 1}", ""),
])
def test_closing_suffix(text: str, suffix: str) -> None:
    assert closing_suffix(text) == suffix
    if suffix:
        assert isinstance(orjson.loads(text + suffix), dict)
