"""Property: whatever the text, parsing, compiling and formatting answer with ccm's own diagnostics, never an
exception; and formatting never changes what a file means (`FormatError` would say it did)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccm.compile.check import RouteText, check
from ccm.diagnostics import Diagnostic
from ccm.dsl import RouteSyntaxError
from ccm.dsl.format import format_source
from tests.lang.conftest import EXAMPLES, ROUTES

BALANCED = ROUTES.parent / "tests" / "lang" / "golden" / "valid" / "balance.ccm"
SOURCES = [p.read_text() for p in [ROUTES, *EXAMPLES, BALANCED]]
BASE = ROUTES.parent
VOCABULARY = [
    "{", "}", "(", ")", "[", "]", "->", "..", "=", ":", ",", "~", "==", ">=", "<", "\n", " ", '"', "#", "not", "and",
    "or", "default", "direct", "route", "model", "provider", "test", "request", "expect", "tokens", "effort",
    "header", "tool", "retry", "fallback", "include", "settings", "env(", '"X"', "128k", "1.5m", "8s", "32mb", "p/x",
    "a", "high", "\\", "é", "\t", "0", "-1", "true", "null", "weight", "3", "q/y", "balance", "least-busy", "breaker",
    "failures", "cooldown", "off", "10s..2m",
]

# CCM_FUZZ_EXAMPLES=2000 for a deeper run than CI affords.
quick = settings(max_examples=int(os.environ.get("CCM_FUZZ_EXAMPLES", "150")), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _exercise(text: str) -> None:
    result = check(RouteText(text, "fuzz.ccm", BASE), {})
    assert all(isinstance(d, Diagnostic) for d in result.reported)
    assert (result.table is None) == bool(result.problems)
    for diagnostic in result.reported:
        diagnostic.render()
    try:
        formatted = format_source(text, "fuzz.ccm")
    except RouteSyntaxError:
        return
    assert format_source(formatted, "fuzz.ccm") == formatted


@quick
@given(st.lists(st.sampled_from(VOCABULARY), max_size=60))
def test_token_soup(tokens: list[str]) -> None:
    _exercise(" ".join(tokens))


@quick
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _exercise(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        how = draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if how == "delete":
            text = text[:start] + text[end:]
        elif how == "insert":
            text = text[:start] + draw(st.sampled_from(VOCABULARY)) + text[start:]
        else:
            text = text[:end] + text[start:end] + text[end:]
    return text


@quick
@given(mutated())
def test_mutated_valid_files(text: str) -> None:
    _exercise(text)
