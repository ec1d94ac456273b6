"""`ccm fmt`: canonical layout, every comment kept, idempotent, meaning unchanged."""

from __future__ import annotations

from ccm.dsl.format import format_source

MESSY = """\
# heading comment


settings { body_limit 1mb }   # trailing on a one-line block
provider p {   # after the brace
  type openai
    url "http://x"   # url

  # before key
  key env("K")
  # last in block
}
model a = p/a
model longer-name = p/b { context 8k  max_output 1k }
route {
  websearch->a
  (image or thinking) and not background -> longer-name   # grouped
  default -> a
}
test "multi-line request" {
  request {
    model: "m",   # the model
    messages: [
      { role: "user", content: "x" }
      # a comment inside an array
    ]
  }
  expect a
}
# the end
"""

EXPECTED = """\
# heading comment

settings {  # trailing on a one-line block
  body_limit 1mb
}
provider p {  # after the brace
  type openai
  url  "http://x"  # url

  # before key
  key env("K")
  # last in block
}
model a = p/a
model longer-name = p/b {
  context    8k
  max_output 1k
}
route {
  websearch                              -> a
  (image or thinking) and not background -> longer-name  # grouped
  default                                -> a
}
test "multi-line request" {
  request {
    model: "m"  # the model
    messages: [
      { role: "user", content: "x" }
      # a comment inside an array
    ]
  }
  expect a
}
# the end
"""


def test_canonical_layout_keeps_every_comment() -> None:
    assert format_source(MESSY, "messy.ccm") == EXPECTED


def test_formatting_is_idempotent() -> None:
    once = format_source(MESSY, "messy.ccm")
    assert format_source(once, "messy.ccm") == once


def test_empty_and_comment_only_files() -> None:
    assert format_source("", "e.ccm") == ""
    assert format_source("\n\n# only a comment\n\n", "e.ccm") == "# only a comment\n"


def test_a_plans_budget_and_limits_are_laid_out_like_other_items() -> None:
    messy = "plan trial {  budget   $20   per month  rpm 60\n      tpm 400k   # each key's\n}\n"
    expected = "plan trial {\n  budget $20 per month\n  rpm    60\n  tpm    400k  # each key's\n}\n"
    assert format_source(messy, "p.ccm") == expected
    assert format_source(expected, "p.ccm") == expected
