"""Key secrets: made here, shown once, stored only as a hash.

A secret is `ccm-sk-` and 43 base62 characters (256 random bits from the OS, `secrets.token_bytes`). Only its
SHA-256 is stored, with a short non-secret prefix for people to recognise it (`ccm-sk-4fQ9x…`). A plain SHA-256 is
the standard choice for a high-entropy secret (GitHub's, Stripe's and LiteLLM's key stores do this): a slow
password hash (bcrypt, argon2) protects *guessable* secrets, and nobody can guess 256 random bits, so it would only
add milliseconds to every request. Lookup is by the hash, an index probe: the comparison of a secret never runs
byte by byte over attacker-chosen input, so there is no timing to learn; `same_secret` (constant time) is for the
places that compare two secrets directly.

Names are what people type in commands: letters, digits, `-`, `_`, `.`, at most 64 characters.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from ccm.ledger.errors import BadInput

PREFIX = "ccm-sk-"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 43  # 62**43 > 2**256
_SECRET = re.compile(rf"{re.escape(PREFIX)}[0-9A-Za-z]{{{_BODY_LENGTH}}}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DISPLAY_LENGTH = len(PREFIX) + 6


def new_secret() -> str:
    number = int.from_bytes(secrets.token_bytes(32), "big")
    digits = []
    for _ in range(_BODY_LENGTH):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return PREFIX + "".join(digits)


def looks_like_secret(text: str) -> bool:
    """Whether `text` has the shape of a ccm key (so the request path can tell a ccm key from another kind)."""
    return _SECRET.fullmatch(text) is not None


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """The part of a secret safe to show and log: `ccm-sk-4fQ9xA`."""
    return secret[:DISPLAY_LENGTH]


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadInput(f"`{name}` is not a valid key name",
                       "use letters, digits, '-', '_' or '.', starting with a letter or digit, at most 64 characters")
    return name


def parse_models(text: str) -> tuple[str, ...]:
    """`--models opus,coder`: model aliases (or `provider/model`) a key may use; empty means every model."""
    models = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    for model in models:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./:@+-]*", model):
            raise BadInput(f"`{model}` is not a model name", "list aliases from the route file: --models opus,coder")
    if not models:
        raise BadInput(f"`{text}` names no model", "list aliases from the route file: --models opus,coder")
    return models


def parse_limit(text: str, what: str) -> int:
    """A whole positive number for `--rpm` / `--tpm`."""
    if not re.fullmatch(r"[0-9]{1,12}", text.strip()) or int(text) < 1:
        raise BadInput(f"`{text}` is not a valid {what}", f"give a whole number of at least 1: --{what} 60")
    return int(text)
