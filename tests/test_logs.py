"""The text log format keeps one message on one line: what an upstream or a model wrote cannot forge a line."""

from __future__ import annotations

import logging

from ccm.logs import TextFormatter


def formatted(message: str, *args: object) -> str:
    record = logging.LogRecord("ccm.core", logging.INFO, __file__, 1, message, args, None)
    return TextFormatter().format(record)


def test_control_characters_in_a_message_are_escaped() -> None:
    upstream_text = "bad request\n2026-12-03 10:00:00,000 INFO ccm.request: POST /v1/messages 200\x1b[2K\u2028"
    line = formatted("provider=%s failed (%s)", "openai", upstream_text)
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith("failed (bad request\\n2026-12-03 10:00:00,000 INFO ccm.request: POST /v1/messages 200"
                         "\\x1b[2K\\u2028)")


def test_printable_text_is_left_as_it_is() -> None:
    assert formatted("model ünïcode → %s", "gpt-5.5").endswith("ccm.core: model ünïcode → gpt-5.5")
