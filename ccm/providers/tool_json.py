"""Tool-call arguments from OpenAI-compatible models, made into the JSON object Anthropic's `tool_use.input` needs.

Weaker models (and servers that cut a stream short) hand back arguments that are not valid JSON: Python literals,
single quotes, bare keys, trailing or missing commas, raw newlines inside strings, a markdown fence, text around the
object, or an object truncated mid-way. Two entry points:

    parse_arguments(text)  complete arguments (non-streaming replies) → (input object, outcome), the outcome one of
                           "valid", "repaired", "invalid"; "invalid" comes with `{}`, the only safe stand-in.
    closing_suffix(text)   streamed arguments, whose fragments were already forwarded verbatim: the text to append so
                           the concatenation parses as an object ("" when it already does, or when only a rewrite
                           could fix it). Covers the common stream failures: no arguments at all, a cut-off object.

Both are pure and never raise.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson

Outcome = Literal["valid", "repaired", "invalid"]

_FENCE = "```"
_FENCE_INFO = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")  # the `json` of ```json
_BARE_LITERALS = {"True": "true", "False": "false", "None": "null", "true": "true", "false": "false", "null": "null"}
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?\Z")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"', "'": "'"}


def parse_arguments(text: str) -> tuple[dict[str, Any], Outcome]:
    strict = _strict_object(text)
    if strict is not None:
        return strict, "valid"
    repaired = repair(text)
    if repaired is not None:
        return orjson.loads(repaired), "repaired"
    return {}, "invalid"


def _strict_object(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return {}  # a tool without parameters: some servers send "" instead of "{}"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, str):  # double-encoded arguments: "{\"a\": 1}"
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def repair(text: str) -> str | None:
    """Repaired JSON text of an object, or None when there is no object to recover."""
    stripped = text.strip()
    fenced = unfence(stripped)
    if fenced is not None:
        stripped = fenced
    start = stripped.find("{")
    if start < 0:
        return None
    tokens = _tokens(stripped[start:])
    repaired = "".join(_structure(tokens))
    try:
        value = orjson.loads(repaired)
    except orjson.JSONDecodeError:
        return None
    return repaired if isinstance(value, dict) else None


def unfence(text: str) -> str | None:
    r"""The stripped inside of a markdown fence (```json … ```) that is the whole of `text`, else None.

    A scan, not a regex: `^```[\w-]*\s*\n?(.*?)\n?```$` took 15 s on "```json" and 20,000 " \n" of model output."""
    if len(text) < 2 * len(_FENCE) or not (text.startswith(_FENCE) and text.endswith(_FENCE)):
        return None
    inside = text[len(_FENCE) : -len(_FENCE)]
    info = 0
    while info < len(inside) and inside[info] in _FENCE_INFO:
        info += 1
    return inside[info:].strip()


# --- tolerant tokenizer -------------------------------------------------------------------------------------------

# A token is (kind, json_text): kind is one of "{", "}", "[", "]", ":", ",", "str" (json_text is the serialised
# string) or "lit" (number, true/false/null). Bare words become strings.


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "{}[]:,":
            tokens.append((c, c))
            i += 1
        elif c in "\"'":
            value, i = _string(text, i + 1, c)
            tokens.append(("str", orjson.dumps(value).decode()))
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and text[j] not in "{}[]:,\"'" and not text[j].isspace():
                j += 1
            word = text[i:j]
            if word in _BARE_LITERALS:
                tokens.append(("lit", _BARE_LITERALS[word]))
            elif _NUMBER.match(word):
                tokens.append(("lit", word))
            else:
                tokens.append(("str", orjson.dumps(word).decode()))
            i = j
    return tokens


def _string(text: str, i: int, quote: str) -> tuple[str, int]:
    """The string starting after its opening quote; an unterminated string ends at the end of the text."""
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), i


def _structure(tokens: list[tuple[str, str]]) -> list[str]:
    """Rebuild a well-formed object from the first `{`: drop stray and trailing commas, insert missing commas and
    colons, give a dangling key a null value, close what is left open. Text after the first object is ignored."""
    out: list[str] = []
    # One frame per open container: [opener, what comes next] with next in key/colon/value/comma.
    stack: list[list[str]] = []
    for kind, text in tokens:
        if not stack:
            if out:
                break
            if kind == "{":
                out.append("{")
                stack.append(["{", "key"])
            continue
        frame = stack[-1]
        if kind == ",":
            if frame[1] == "comma":
                out.append(",")
                frame[1] = "key" if frame[0] == "{" else "value"
            continue
        if kind == ":":
            if frame[1] == "colon":
                out.append(":")
                frame[1] = "value"
            continue
        if kind in ("}", "]"):
            opener = "{" if kind == "}" else "["
            if any(f[0] == opener for f in stack):
                while stack[-1][0] != opener:
                    _close(out, stack.pop())
                _close(out, stack.pop())
            continue
        if frame[1] == "comma":
            out.append(",")
            frame[1] = "key" if frame[0] == "{" else "value"
        if frame[1] == "colon":
            out.append(":")
            frame[1] = "value"
        if frame[1] == "key":
            if kind in ("str", "lit"):
                out.append(text if kind == "str" else orjson.dumps(text).decode())
                frame[1] = "colon"
            continue  # an object or array cannot be a key
        out.append(text)
        frame[1] = "comma"
        if kind in ("{", "["):
            stack.append([kind, "key" if kind == "{" else "value"])
    while stack:
        _close(out, stack.pop())
    return out


def _close(out: list[str], frame: list[str]) -> None:
    """Append the closer of a container, first fixing whatever was left dangling in it."""
    if frame[1] == "colon":
        out.append(":null")
    elif frame[1] == "value" and frame[0] == "{":
        out.append("null")
    elif out[-1] == ",":
        out.pop()
    out.append("}" if frame[0] == "{" else "]")


# --- streams ------------------------------------------------------------------------------------------------------


def closing_suffix(text: str) -> str:
    """What to append to streamed arguments so they parse as an object; "" if valid or not fixable by appending."""
    if not text.strip():
        return "{}"
    if _strict_object(text) is not None:
        return ""
    stack: list[str] = []
    in_string = escaped = False
    last = ""  # last significant character outside strings
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
                last = '"'
            continue
        if c == '"':
            in_string = True
            last = '"'
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
            last = c
        elif c in "}]":
            if not stack:
                return ""
            stack.pop()
            last = c
        elif not c.isspace():
            last = c
    if escaped or not stack:
        return ""
    suffix = '"' if in_string else ""
    if last == ":":
        suffix += "null"
    elif last == ",":
        return ""
    suffix += "".join(reversed(stack))
    candidate = text + suffix
    if _strict_object(candidate) is None:
        # A dangling key ({"a": 1, "b") needs a value before the closer.
        candidate = text + (suffix[:1] if in_string else "") + ":null" + "".join(reversed(stack))
        if _strict_object(candidate) is None:
            return ""
        suffix = candidate[len(text) :]
    return suffix
