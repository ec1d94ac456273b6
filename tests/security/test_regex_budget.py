"""Every regular expression in ccm that reads text from a client, a model, an upstream or a route file, fed ~100 KB of
adversarial input (long runs of whitespace, repeated prefixes, nested-quantifier bait, each with and without a
character that makes the match fail at the end) under a time bound.

A pattern that backtracks blocks the event loop for every request (issue 12, item 1: the subagent tag took ~14 s on
3,000 spaces, a markdown fence 15 s on 20,000 lines). The patterns are found, not listed by hand: every compiled
pattern at module level in `ccm`, every terminal of the route grammar, and every regex written inline in a call. A
new one fails `test_every_pattern_has_bait` until it gets an entry in `BAIT` here, so it is measured too.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import fnmatch
import functools
import importlib
import pkgutil
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ccm
from ccm.dsl import RouteSyntaxError, parse
from ccm.dsl.parser import _parser
from ccm.media import pdf_pages
from ccm.providers import tool_json
from ccm.providers.tool_ids import client_tool_id, upstream_tool_id
from ccm.providers.tool_names import CHAT, GEMINI, upstream_name
from ccm.route import _glob, select_route, strip_subagent_tag, subagent_tag_in, without_subagent_tags
from ccm.table import Default, Direct, Literal_, Model, Provider, RoutingTable, Rule

BUDGET = 0.2  # seconds per call; linear scans of 100 KB take about a millisecond
SIZE = 100_000
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)

# Fragments repeated to SIZE as they would most hurt a pattern: its literal prefixes, the characters its quantifiers
# loop over, text that almost matches. Every pattern also gets GENERIC; these are extra, by pattern name (module and
# attribute, `grammar:TERMINAL`, or `file:literal` for a regex written inline in a call).
GENERIC = [" ", "\n", " \n", "\t", "\r\n", "a", "0", "-", "a-", "\\", '"', '\\"', "/", "`", "_", "é", "${", "//a:"]
BAIT: dict[str, list[str]] = {
    "ccm.compile.values:_QUANTITY": ["0.", "0.0", "1a"],
    "ccm.core.record:_CONTROL": ["\x00", "\x1b[", "a\x7f"],
    "ccm.core.dispatch:_CONTEXT_OVERFLOW": ["context ", "too many input ", "exceeds the maximum number of ", "input "],
    "ccm.diagnostics:_TOKEN_AT": ['"a', '"\\', "a.", "@+"],
    "ccm.media:_PDF_COUNT": ["/Count ", "/Count 9", "9"],
    "ccm.media:_PDF_PAGE": ["/Type ", "/Type /Page", "/Type/Pagex"],
    "ccm.providers.gemini.request:_GENERATION": ["gemini-", "gemini-1"],
    "ccm.providers.request:_OLD_USER_ID": ["user_a_account__session_", "_session_a", "user_0"],
    "ccm.providers.responses.request:_REASONING_MODEL": ["o1", "gpt-"],
    "ccm.providers.tool_json:_NUMBER": ["1", "1.", "1e", "-0"],
    "ccm.importers.json5:_NUMBER": ["1.", "0x", "1e+", ".1"],
    "ccm.importers.keys:_ANY_REFERENCE": ["${", "$A", "${a"],
    "ccm.importers.keys:_WHOLE_REFERENCE": ["${", "$A", "${a"],
    "ccm.importers.readers:_HEADER": ["[", "[[ ", "[a ", "] "],
    "ccm.importers.readers:_KEY": ["a.", "a . ", '"a".', "'a'."],
    "ccm.ledger.money:_USD": ["1,000", "1.", ",000"],
    "grammar:NAME": ["a-", "a_-"],
    "grammar:MODELPATH": ["a/", "a-/", "a/-", "a/:"],
    "grammar:STRING": ['"a', '"\\"', "\\\\"],
    "grammar:QUANTITY": ["1.", "1.1"],
    "grammar:NUMBER": ["-1.", "1e", "1.1e+"],
    "grammar:_NL": ["\n\t", "\r\n "],
    "grammar:COMMENT": ["#"],
    "grammar:COMPARE": ["=", "<", "!"],
}
METHODS = ("match", "search", "fullmatch", "sub", "findall", "finditer", "split")
# Patterns that read only what the operator wrote about their own set-up (the config file `ccm import` converts, a
# database URL), never a client's, a model's, an upstream's or a route file's text: outside the threat model
# (docs/security.md), and the TOML scan runs only on a file tomllib accepted: measured on 200 characters, a long
# line of such a file, which still catches an exponential pattern. Each is superlinear on some shape (`${`, `\\"` or
# `//a:` repeated: 2-4 s on 100 KB; the TOML header pattern is cubic on `[` and spaces, 0.6 s on 1 KB) and needs a
# linear rewrite before it may meet hostile text.
TRUSTED_INPUT = {
    "ccm.importers.keys:_ANY_REFERENCE": "a value in the config file being imported",
    "ccm.importers.readers:_HEADER": "a line of the TOML file being imported",
    "ccm/importers/readers.py:r'\"((?:[^\"\\\\]|\\\\.)*)\"|\\'([^\\']*)\\'|([A-Za-z0-9_-]+)'": "a dotted TOML key",
    "ccm/importers/readers.py:r'\"(?:[^\"\\\\]|\\\\.)*\"|\\'[^\\']*\\''": "a line of the TOML file being imported",
    'ccm/ledger/store/base.py:r"(//[^:/@]*:)[^@]*@"': "the ledger's database URL, from the operator",
}


def adversarial(fragments: list[str], size: int = SIZE) -> Iterator[str]:
    for fragment in dict.fromkeys([*fragments, *GENERIC]):
        run = fragment * (size // len(fragment))
        yield run
        yield run + "!"
        yield run + "\x00"
        yield fragments[0] + run + "!" if fragments else run


def slowest(call: Callable[[Any], object], inputs: Iterator[Any]) -> tuple[float, Any]:
    worst: tuple[float, Any] = (0.0, "")
    for text in inputs:
        started = time.perf_counter()
        result = call(text)
        if isinstance(result, Iterator):
            for _ in result:  # finditer does its work as it is read
                pass
        elapsed = time.perf_counter() - started
        if elapsed > worst[0]:
            worst = (elapsed, text)
    return worst


def _module_of(name: str) -> Path:
    relative = Path(*name.split("."))
    package = REPO / relative / "__init__.py"
    return package if package.exists() else (REPO / relative).with_suffix(".py")


def _calls_in(path: Path, attribute: str) -> set[str]:
    """The methods called on the module-level name `attribute` in `path` (`_NAME.match(…)` → "match")."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == attribute
            and node.func.attr in METHODS}


def _module_patterns() -> dict[str, tuple[re.Pattern[Any], set[str]]]:
    """Every compiled pattern at module level in ccm, with the methods its module calls on it."""
    found: dict[str, tuple[re.Pattern[Any], set[str]]] = {}
    for info in pkgutil.walk_packages(ccm.__path__, "ccm."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and getattr(module, "__name__", "") == info.name:
                found[f"{info.name}:{name}"] = (value, _calls_in(_module_of(info.name), name))
    return found


def _inline_patterns() -> dict[str, tuple[re.Pattern[Any], set[str]]]:
    """Every regex written as a literal in an `re.<method>(…)` call, with that method."""
    found: dict[str, tuple[re.Pattern[Any], set[str]]] = {}
    for path in sorted((REPO / "ccm").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                    and node.func.attr in METHODS and node.args and isinstance(node.args[0], ast.Constant)):
                key = f"{path.relative_to(REPO)}:{ast.get_source_segment(text, node.args[0])}"
                pattern, methods = found.get(key, (re.compile(node.args[0].value), set()))
                found[key] = (pattern, methods | {node.func.attr})
    return found


def _grammar_patterns() -> dict[str, tuple[re.Pattern[Any], set[str]]]:
    """The route grammar's terminals: lark's lexer matches them at a position."""
    found: dict[str, tuple[re.Pattern[Any], set[str]]] = {}
    for terminal in _parser().terminals:
        if terminal.pattern.type == "re":
            flags = sum(getattr(re, flag.upper()) for flag in terminal.pattern.flags)
            found[f"grammar:{terminal.name}"] = (re.compile(terminal.pattern.to_regexp(), flags), {"match"})
    return found


PATTERNS = {**_module_patterns(), **_inline_patterns(), **_grammar_patterns()}


def test_every_pattern_is_found_with_how_it_is_used() -> None:
    """A pattern whose module never calls a method on it (used from elsewhere) needs its method said here."""
    unused = sorted(name for name, (_, methods) in PATTERNS.items() if not methods)
    assert not unused, f"no re method called on {unused} in its module: say how it is used"
    assert len(PATTERNS) > 40  # the search found them (module patterns, inline ones, grammar terminals)
    stale = sorted((set(BAIT) | set(TRUSTED_INPUT)) - set(PATTERNS))
    assert not stale, f"BAIT or TRUSTED_INPUT name patterns that no longer exist: {stale}"


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_is_linear(name: str) -> None:
    """Each pattern, applied as ccm applies it (an anchored `match` is not measured as a `search`: nearly any loop is
    quadratic when retried at every position, which ccm never asks of it)."""
    pattern, methods = PATTERNS[name]
    fragments = BAIT.get(name, [])
    size = 200 if name in TRUSTED_INPUT else SIZE
    inputs: list[str] | list[bytes] = list(adversarial(fragments, size))
    if isinstance(pattern.pattern, bytes):
        inputs = [text.encode("utf-8") for text in adversarial(fragments, size)]
    for method in sorted(methods):
        call = getattr(pattern, method)
        if method == "sub":
            call = functools.partial(pattern.sub, "" if isinstance(pattern.pattern, str) else b"")
        elapsed, text = slowest(call, iter(inputs))
        assert elapsed < BUDGET, f"{name}.{method} took {elapsed:.2f} s on {text[:40]!r}…"


# --- the code that replaced a regex, and the functions around inline ones --------------------------------------

TAG_OPEN, TAG_CLOSE = "<CCM-SUBAGENT-MODEL>", "</CCM-SUBAGENT-MODEL>"


def _tag_inputs() -> Iterator[str]:
    for run in (" " * SIZE, " \n" * (SIZE // 2), "a " * (SIZE // 2), TAG_OPEN * (SIZE // len(TAG_OPEN))):
        yield TAG_OPEN + run
        yield TAG_OPEN + run + "</CCM-SUBAGENT-MODEL"
        yield TAG_OPEN + run + TAG_CLOSE + run
        yield (TAG_OPEN + " " + TAG_CLOSE + " ") * (SIZE // 45)


def test_subagent_tag_is_linear() -> None:
    table = RoutingTable(
        version="t", sources=(), rules=(Rule(condition=Direct(), target=None, source="direct"),
                                       Rule(condition=Default(), target="m", source="default")),
        providers={"p": Provider(name="p", type="anthropic", url=Literal_(value="http://x"), auth="x-api-key")},
        models={"m": Model(name="m", provider="p", model="x")},
    )

    def route(text: str) -> None:
        select_route(table, {"model": "m", "system": [{"type": "text", "text": text}], "messages": []})
        strip_subagent_tag({"system": text})
        strip_subagent_tag({"system": [{"type": "text", "text": text}]})

    elapsed, text = slowest(route, _tag_inputs())
    assert elapsed < BUDGET, f"the subagent tag took {elapsed:.2f} s on {text[:40]!r}…"


def _fence_inputs() -> Iterator[str]:
    for run in (" \n" * (SIZE // 2), " " * SIZE, "\n" * SIZE, "`" * SIZE, "json" * (SIZE // 4)):
        for tail in ("x", "```", "``", "{", "```\n```x", '{"a": 1}'):
            yield "```json" + run + tail
            yield "```" + run + tail


@pytest.mark.parametrize("function", [tool_json.repair, tool_json.parse_arguments, tool_json.closing_suffix])
def test_tool_arguments_are_linear(function: Callable[[str], object]) -> None:
    elapsed, text = slowest(function, _fence_inputs())
    assert elapsed < BUDGET * 5, f"{function.__name__} took {elapsed:.2f} s on {text[:40]!r}…"  # a tokenizer too


def test_tool_names_and_ids_are_linear() -> None:
    chat, gemini = functools.partial(upstream_name, rule=CHAT), functools.partial(upstream_name, rule=GEMINI)
    for call in (chat, gemini, client_tool_id, upstream_tool_id):
        elapsed, text = slowest(call, adversarial(["a b", "toolu_ccm_", "\\u00"]))
        assert elapsed < BUDGET, f"{call} took {elapsed:.2f} s on {text[:40]!r}…"
    elapsed, _ = slowest(tool_json.repair, iter(['{"a": "' + "\\u00" * (SIZE // 4) + '"}']))
    assert elapsed < BUDGET


def test_log_escaping_is_linear() -> None:
    from ccm.core.record import loggable

    elapsed, text = slowest(loggable, adversarial(["\x00", "\r\n", "a\x1b"]))
    # linear, but a Python call per control character: 100 KB of them is ~0.1 s (str.translate would be ~10x less)
    assert elapsed < BUDGET * 5, f"loggable took {elapsed:.2f} s on {text[:40]!r}…"


def test_pdf_pages_is_linear_and_never_raises() -> None:
    for fragment in (b"/Type ", b"/Count ", b"/Count 9", b"9"):
        data = base64.b64encode(fragment * (SIZE // len(fragment)) + b"!").decode()
        started = time.perf_counter()
        assert pdf_pages(data) >= 1
        assert time.perf_counter() - started < BUDGET
    assert pdf_pages(base64.b64encode(b"/Count " + b"9" * 5000).decode()) == 1  # int() refuses > 4,300 digits


@pytest.mark.parametrize("glob",
                         ["*a*a*a*a*a*a*a*a*a*a*b", "*" + "a*" * 50 + "b", "*?" * 40 + "x", "[a-z]*" * 20 + "X"])
def test_route_file_globs_are_linear(glob: str) -> None:
    """Globs come from the route file (a hostile one in CI) and meet model names, header values and tool names."""
    match = _glob(glob)
    elapsed, text = slowest(match, adversarial(["ab", "a"]))
    assert elapsed < BUDGET, f"glob {glob!r} took {elapsed:.2f} s on {text[:40]!r}…"
    assert fnmatch.fnmatchcase("ab", glob) == match("ab")


@pytest.mark.parametrize("text", [
    '"' + "\\" * SIZE,
    '"' + "a" * SIZE,
    'route {\n  model ~ "' + "\\a" * (SIZE // 2),
    "a" + "-" * SIZE,
    "provider " + "a-" * (SIZE // 2) + "/",
    "model a = " + "p/" * (SIZE // 2) + "-",
    "route {\n  tokens > " + "1." * (SIZE // 2),
    "#" + " " * SIZE + "\x00",
    "\n\t" * (SIZE // 2) + "!",
])
def test_route_file_lexing_is_linear(text: str) -> None:
    started = time.perf_counter()
    with contextlib.suppress(RouteSyntaxError):
        parse(text, "hostile.ccm")
    assert time.perf_counter() - started < BUDGET * 5


# --- the linear code means what the regexes meant ----------------------------------------------------------------

_OLD_TAG = re.compile(r"<CCM-SUBAGENT-MODEL>\s*(.*?)\s*</CCM-SUBAGENT-MODEL>\s*", re.S)
_OLD_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)
_pieces = st.lists(st.sampled_from([TAG_OPEN, TAG_CLOSE, " ", "\n", "\u00a0", "a", "<", ">", "/"]), max_size=12)


@settings(max_examples=400, deadline=None)
@given(_pieces)
def test_tag_search_agrees_with_the_regex(pieces: list[str]) -> None:
    text = "".join(pieces)
    found = _OLD_TAG.search(text)
    assert subagent_tag_in(text) == (found.group(1) if found else None)
    assert without_subagent_tags(text) == _OLD_TAG.sub("", text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["```", "`", "json", "-", " ", "\n", "{", "}", "a", "\t"]), max_size=10))
def test_unfence_agrees_with_the_regex(pieces: list[str]) -> None:
    text = "".join(pieces).strip()
    found = _OLD_FENCE.match(text)
    assert tool_json.unfence(text) == (found.group(1).strip() if found else None)
