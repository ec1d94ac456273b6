"""A small JSON5 reader that remembers where each key was written.

claude-code-router reads its config with JSON5 (comments, trailing commas, unquoted keys, single-quoted strings,
hex numbers, Infinity/NaN), so the importer must too. The `json5` package parses it but keeps no positions; the
importer needs the line of every key to report a problem found after parsing (`Providers[2].api_base_url` is not
a URL) where the user wrote it, so this reader builds the data and the key → line map in one pass.

    load_json5(text, name) -> Document        raises ImportFailed with `name:line: error: …`
"""

from __future__ import annotations

import math
import re
from typing import Any

from ccm.importers.source import Document, ImportFailed, Path, Problem

_WHITESPACE = " \t\n\r\v\f\u00a0\ufeff\u2028\u2029"
_IDENTIFIER = re.compile(r"[A-Za-z_$\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F]+|Infinity|NaN|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "0": "\0", "'": "'", '"': '"',
            "\\": "\\", "/": "/"}


class _Syntax(Exception):
    def __init__(self, position: int, message: str) -> None:
        self.position = position
        self.message = message


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.lines: dict[Path, int] = {}

    def line_of(self, position: int) -> int:
        return self.text.count("\n", 0, position) + 1

    def skip(self) -> None:
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char in _WHITESPACE:
                self.at += 1
            elif text.startswith("//", self.at):
                end = text.find("\n", self.at)
                self.at = len(text) if end < 0 else end
            elif text.startswith("/*", self.at):
                end = text.find("*/", self.at + 2)
                if end < 0:
                    raise _Syntax(self.at, "unterminated /* comment")
                self.at = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.at] if self.at < len(self.text) else ""

    def value(self, path: Path) -> Any:
        char = self.peek()
        if not char:
            raise _Syntax(self.at, "unexpected end of file")
        if char == "{":
            return self.object(path)
        if char == "[":
            return self.array(path)
        if char in "\"'":
            return self.string()
        for word, meaning in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.at) and not _continues_word(self.text, self.at + len(word)):
                self.at += len(word)
                return meaning
        found = _NUMBER.match(self.text, self.at)
        if found and not _continues_word(self.text, found.end()):
            self.at = found.end()
            return _number(found.group(0))
        raise _Syntax(self.at, f"unexpected {_shown(self.text, self.at)}")

    def object(self, path: Path) -> dict[str, Any]:
        self.at += 1
        out: dict[str, Any] = {}
        while True:
            char = self.peek()
            if char == "}":
                self.at += 1
                return out
            start = self.at
            key = self.key()
            if self.peek() != ":":
                raise _Syntax(self.at, f"expected `:` after the key `{key}`, found {_shown(self.text, self.at)}")
            self.at += 1
            self.lines[(*path, key)] = self.line_of(start)
            out[key] = self.value((*path, key))
            char = self.peek()
            if char == ",":
                self.at += 1
            elif char != "}":
                raise _Syntax(self.at, f"expected `,` or `}}` after a value, found {_shown(self.text, self.at)}")

    def key(self) -> str:
        char = self.peek()
        if char in "\"'":
            return self.string()
        found = _IDENTIFIER.match(self.text, self.at)
        if not found:
            raise _Syntax(self.at, f"expected a key, found {_shown(self.text, self.at)}")
        self.at = found.end()
        return found.group(0)

    def array(self, path: Path) -> list[Any]:
        self.at += 1
        out: list[Any] = []
        while True:
            char = self.peek()
            if char == "]":
                self.at += 1
                return out
            self.lines[(*path, len(out))] = self.line_of(self.at)
            out.append(self.value((*path, len(out))))
            char = self.peek()
            if char == ",":
                self.at += 1
            elif char != "]":
                raise _Syntax(self.at, f"expected `,` or `]` after a value, found {_shown(self.text, self.at)}")

    def string(self) -> str:
        text = self.text
        quote = text[self.at]
        start = self.at
        self.at += 1
        parts: list[str] = []
        while True:
            if self.at >= len(text) or text[self.at] == "\n":
                raise _Syntax(start, "unterminated string")
            char = text[self.at]
            if char == quote:
                self.at += 1
                return "".join(parts)
            if char != "\\":
                parts.append(char)
                self.at += 1
                continue
            escape = text[self.at + 1: self.at + 2]
            if escape in ("\n", "\u2028", "\u2029"):  # a line continuation
                self.at += 2
            elif escape == "\r":
                self.at += 3 if text[self.at + 2: self.at + 3] == "\n" else 2
            elif escape in _ESCAPES:
                parts.append(_ESCAPES[escape])
                self.at += 2
            elif escape in ("x", "u"):
                width = 2 if escape == "x" else 4
                digits = text[self.at + 2: self.at + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise _Syntax(self.at, f"bad \\{escape} escape")
                parts.append(chr(int(digits, 16)))
                self.at += 2 + width
            elif escape:
                parts.append(escape)  # JSON5 keeps an unknown escape's character
                self.at += 2
            else:
                raise _Syntax(start, "unterminated string")


def _continues_word(text: str, at: int) -> bool:
    return at < len(text) and (text[at].isalnum() or text[at] in "_$")


def _number(raw: str) -> int | float:
    sign = -1 if raw.startswith("-") else 1
    body = raw.lstrip("+-")
    if body == "Infinity":
        return sign * math.inf
    if body == "NaN":
        return math.nan
    if body[:2] in ("0x", "0X"):
        return sign * int(body, 16)
    if any(c in body for c in ".eE"):
        return sign * float(body)
    return sign * int(body)


def _shown(text: str, at: int) -> str:
    if at >= len(text):
        return "the end of the file"
    found = re.match(r"[^\s,:\[\]{}]+", text[at:])
    return f"`{found.group(0)[:20] if found else text[at]}`"


def load_json5(text: str, name: str) -> Document:
    parser = _Parser(text)
    try:
        data = parser.value(())
        if parser.peek():
            raise _Syntax(parser.at, f"unexpected {_shown(text, parser.at)} after the end of the document")
    except _Syntax as error:
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        message = f"not valid JSON5: {error.message} (column {column})"
        raise ImportFailed([Problem(name, parser.line_of(error.position), "error", message)]) from None
    return Document(name, data, parser.lines)
