"""Reading written values: quantities with suffixes, globs, JSON-ish literals.

Each reader takes the text as written and returns the value or raises `BadValue` (message + hint); the compiler turns
that into a diagnostic at the word's span. The same text means different things in different places (`2m` is two
million tokens after `tokens`, two minutes after `idle`), so every place names the reader it wants.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from ccm.dsl import syntax as s
from ccm.ledger.errors import BadAmount
from ccm.ledger.money import parse_usd, to_decimal


class BadValue(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*|%)")

TOKEN_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000}
SIZE_SUFFIXES = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
DURATION_SUFFIXES = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _split(text: str) -> tuple[float, str, bool]:
    found = _QUANTITY.fullmatch(text)
    if not found:
        raise BadValue(f"`{text}` is not a number")
    number, suffix = found.groups()
    return float(number), suffix, "." not in number


def token_count(text: str) -> int:
    """`128k` = 128,000, `1.5m` = 1,500,000, `4096`."""
    number, suffix, _ = _split(text)
    if suffix not in TOKEN_SUFFIXES:
        raise BadValue(f"invalid token count `{text}`", "write a number of tokens, optionally with k or m: 128k, 1.5m")
    value = number * TOKEN_SUFFIXES[suffix]
    if value != int(value):
        raise BadValue(f"invalid token count `{text}`: not a whole number of tokens")
    return int(value)


def size(text: str) -> int:
    """Bytes: `32mb`, `512kb` (binary multiples), `1gb`, or a plain number of bytes."""
    number, suffix, _ = _split(text)
    if suffix not in SIZE_SUFFIXES:
        raise BadValue(f"invalid size `{text}`", "write a size with b, kb, mb or gb: 32mb, 512kb")
    return int(number * SIZE_SUFFIXES[suffix])


def duration(text: str) -> float:
    """Seconds: `500ms`, `8s`, `2m`, `1h`."""
    number, suffix, _ = _split(text)
    if suffix not in DURATION_SUFFIXES:
        hint = "a duration needs a unit: ms, s, m or h (500ms, 8s, 2m, 1h)"
        raise BadValue(f"invalid duration `{text}`", hint)
    return number * DURATION_SUFFIXES[suffix]


def positive_duration(text: str) -> float:
    """A duration above zero (`hedge after 0s` would ask every model of the chain at once)."""
    seconds = duration(text)
    if seconds <= 0:
        raise BadValue(f"`{text}` is no time at all", "give a duration above zero: 500ms, 10s")
    return seconds


# Prices above this are typing mistakes, not models (the dearest list price is well under $1,000 per million).
MAX_PRICE = Decimal(1_000_000)


def decimal(text: str) -> Decimal:
    """A plain number without suffix, exactly (prices: never a float)."""
    found = _QUANTITY.fullmatch(text)
    if not found or found.group(2):
        raise BadValue(f"invalid number `{text}`", "prices are plain numbers: US dollars per million tokens")
    value = Decimal(found.group(1))
    if value > MAX_PRICE:
        raise BadValue(f"price `{text}` is too large", "prices are US dollars per million tokens, e.g. 3 or 0.30")
    return value


def percent(text: str) -> Decimal:
    """`20%`, `2.5%`, `0%`: a percentage, exactly, as the number before the sign (20, 2.5, 0)."""
    found = _QUANTITY.fullmatch(text)
    if not found or found.group(2) != "%":
        raise BadValue(f"invalid markup `{text}`", "write a percentage added to the upstream cost: markup 20%")
    value = Decimal(found.group(1))
    if value > 10_000:
        raise BadValue(f"markup `{text}` is too large", "at most 10000% (a hundred times the upstream cost)")
    return value


def share(text: str) -> Decimal:
    """`20%`: a part of a budget, 0 to 100 percent (`budget < 20%`)."""
    found = _QUANTITY.fullmatch(text)
    if not found or found.group(2) != "%" or Decimal(found.group(1)) > 100:
        raise BadValue(f"invalid budget share `{text}`", "a percentage of the budget that is left: budget < 20%")
    return Decimal(found.group(1))


def dollars(text: str) -> Decimal:
    """`$5`, `$0.25`: US dollars, exactly."""
    value = Decimal(text.removeprefix("$"))
    if value > MAX_PRICE * 1000:
        raise BadValue(f"amount `{text}` is too large", "an amount of US dollars, e.g. $5")
    return value


def budget(text: str) -> Decimal:
    """`$20`, `$0.50`: a plan's or team's budget, exactly, above zero and within what the ledger accepts."""
    example = "a budget is US dollars per period: budget $20 per month"
    if not text.startswith("$"):
        raise BadValue(f"invalid budget `{text}`: write it in dollars, `${text}`", example)
    try:
        nanos = parse_usd(text)
    except BadAmount as bad:
        raise BadValue(f"invalid budget: {bad.message}", bad.hint or example) from None
    if nanos == 0:
        raise BadValue(f"a budget of `{text}` allows nothing", "give an amount above zero: budget $20 per month")
    return to_decimal(nanos)


RATE_UNITS = {"rpm": "requests", "tpm": "tokens"}
MAX_RATE = 1_000_000_000  # a limit past this is a typing mistake (and keeps the ledger's thousandths in 64 bits)


def rate_limit(text: str, keyword: str) -> int:
    """`rpm 60`, `tpm 400k`: at most so many requests or tokens a minute, a whole number from 1 (k and m allowed)."""
    unit = RATE_UNITS[keyword]
    hint = f"a whole number of {unit} a minute: {'rpm 60' if keyword == 'rpm' else 'tpm 400k'}"
    found = _QUANTITY.fullmatch(text)
    scale = TOKEN_SUFFIXES.get(found.group(2)) if found else None
    if found is None or scale is None:
        raise BadValue(f"invalid {keyword} `{text}`", hint)
    value = Decimal(found.group(1)) * scale
    if value != int(value) or value < 1:
        raise BadValue(f"invalid {keyword} `{text}`: at least 1, and whole", hint)
    if value > MAX_RATE:
        raise BadValue(f"{keyword} `{text}` is too large", f"at most {MAX_RATE:,} {unit} a minute")
    return int(value)


def whole(text: str, minimum: int = 0) -> int:
    """A plain whole number (retry attempts, concurrency)."""
    number, suffix, integral = _split(text)
    if suffix or not integral:
        raise BadValue(f"invalid number `{text}`: expected a whole number")
    if number < minimum:
        raise BadValue(f"`{text}` is too small: at least {minimum}")
    return int(number)


def weight(text: str) -> int:
    """A deployment's share: a whole number of at least 1."""
    number, suffix, integral = _split(text)
    hint = "weights are relative shares: `weight 3` and `weight 1` send three requests to the first for every one " \
           "to the second; to stop using a deployment, remove it"
    if suffix or not integral:
        raise BadValue(f"invalid weight `{text}`: a weight is a whole number", hint)
    if number < 1:
        raise BadValue(f"weight `{text}` must be at least 1", hint)
    return int(number)


def check_glob(pattern: str) -> None:
    """fnmatch silently treats a malformed class as literal text; a route file says what it means instead."""
    if pattern == "":
        raise BadValue("empty glob", 'a glob matches text: "claude-*", "*haiku*"')
    depth_open = None
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "[" and depth_open is None:
            depth_open = index
            # `[]]` and `[!]]`: a ']' right after the opening (or after '!') is a literal member of the class.
            index += 1
            if index < len(pattern) and pattern[index] == "!":
                index += 1
            if index < len(pattern) and pattern[index] == "]":
                index += 1
            continue
        if char == "]" and depth_open is not None:
            depth_open = None
        index += 1
    if depth_open is not None:
        raise BadValue(f"invalid glob `{pattern}`: `[` at position {depth_open + 1} is never closed",
                       "a character class is written [abc]; match a literal [ with [[]")


def json_value(node: s.JsonValue) -> Any:
    """A JSON-ish literal as Python data. `env(...)` has no place here: the compiler rejects it first."""
    if isinstance(node, s.Str):
        return node.value
    if isinstance(node, s.Scalar):
        return node.value
    if isinstance(node, s.Object):
        return {member_key(m): json_value(m.value) for m in node.members}
    if isinstance(node, s.Array):
        return [json_value(item) for item in node.items]
    raise BadValue("`env(...)` and `file(...)` cannot be used here",
                   "environment values are for provider settings and headers")


def member_key(member: s.Member) -> str:
    return member.key.value if isinstance(member.key, s.Str) else member.key.text


def reference_kind(node: s.Env | s.FileRef) -> str:
    return "env(...)" if isinstance(node, s.Env) else "file(...)"


def find_env(node: s.JsonValue) -> s.Env | s.FileRef | None:
    """The first `env(...)` or `file(...)` inside a JSON-ish literal, if any."""
    if isinstance(node, s.Env | s.FileRef):
        return node
    if isinstance(node, s.Object):
        children: tuple[s.JsonValue, ...] = tuple(m.value for m in node.members)
    elif isinstance(node, s.Array):
        children = node.items
    else:
        return None
    for child in children:
        found = find_env(child)
        if found is not None:
            return found
    return None
