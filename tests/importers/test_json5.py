"""The JSON5 reader: what claude-code-router accepts, and the line of every key and of every syntax error."""

from __future__ import annotations

import json
import math

import pytest

from ccm.importers import ImportFailed
from ccm.importers.json5 import load_json5
from tests.importers.conftest import FIXTURES

JSON5 = """// a comment
{
  unquoted: 'single',   /* a block
  comment */
  "quoted": "a \\"b\\" \\u00e9 \\x41",
  hex: 0xFF, plus: +1, lead: .5, trail: 5., inf: -Infinity,
  list: [1, 2, 3,],
  nested: { deep: [ { key: null, yes: true, no: false, }, ], },
  continued: "one \\
two",
}
"""


def test_reads_what_json5_allows() -> None:
    data = load_json5(JSON5, "config.json").data
    assert data["unquoted"] == "single"
    assert data["quoted"] == 'a "b" é A'
    assert (data["hex"], data["plus"], data["lead"], data["trail"]) == (255, 1, 0.5, 5.0)
    assert data["inf"] == -math.inf
    assert data["list"] == [1, 2, 3]
    assert data["nested"] == {"deep": [{"key": None, "yes": True, "no": False}]}
    assert data["continued"] == "one two"


def test_remembers_the_line_of_every_key_and_item() -> None:
    document = load_json5(JSON5, "config.json")
    assert document.line(("unquoted",)) == 3
    assert document.line(("quoted",)) == 5
    assert document.line(("nested", "deep", 0, "yes")) == 8
    assert document.line(("list", 2)) == 7
    assert document.line(("nested", "missing")) == 8  # the nearest written parent


@pytest.mark.parametrize("name", ["readme-example.json", "ui-config.example.json"])
def test_plain_json_reads_as_json_does(name: str) -> None:
    text = (FIXTURES / "ccr" / name).read_text()
    assert load_json5(text, name).data == json.loads(text)


@pytest.mark.parametrize(("text", "line", "message"), [
    ('{\n  "a": 1\n  "b": 2\n}', 3, "expected `,` or `}` after a value, found `\"b\"`"),
    ('{\n  "a": [1, 2\n}', 3, "expected `,` or `]` after a value, found `}`"),
    ('{\n  "a": "open\n}', 2, "unterminated string"),
    ('{\n  a b: 1\n}', 2, "expected `:` after the key `a`"),
    ('{\n  "a": nope\n}', 2, "unexpected `nope`"),
    ('{ "a": 1 } extra', 1, "after the end of the document"),
    ('{\n  /* never closed', 2, "unterminated /* comment"),
    ("", 1, "unexpected end of file"),
])
def test_syntax_errors_name_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ImportFailed) as failed:
        load_json5(text, "config.json")
    problem = failed.value.problems[0]
    assert (problem.file, problem.line, problem.severity) == ("config.json", line, "error")
    assert message in problem.message
    assert problem.render().startswith(f"config.json:{line}: error: not valid JSON5: ")
