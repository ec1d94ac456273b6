"""A hostile route file against the compiler (issue 12, item 12): long files parse iteratively, deep nesting is a
diagnostic at the spot rather than a RecursionError traceback, and memory grows linearly with the file.

Before: about 1,000 top-level statements ended in a RecursionError in the parser, 990 nested parentheses in one in
the printer, 12,000 statements took 650 MB and a 4 MB file went past 24 GB.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ccm.cli.main import main
from ccm.compile import compile_source
from ccm.compile.route_tests import run_route_tests
from ccm.dsl import RouteSyntaxError, parse
from ccm.dsl.format import format_source
from ccm.dsl.parser import MAX_NESTING
from ccm.route import select_route

pytestmark = pytest.mark.timeout(120)

HEAD = 'provider a {\n  type anthropic\n  url "https://api.anthropic.com"\n}\nmodel m = a/x\n'


def _route(condition: str) -> str:
    return HEAD + f"route {{\n  {condition} -> m\n  default -> m\n}}\n"


def _request(value: str) -> str:
    return _route("websearch") + f'test "t" {{\n  request {{ model: "x", metadata: {value} }}\n  expect m\n}}\n'


def test_ten_thousand_top_level_statements_compile() -> None:
    models = "".join(f"model m{i} = a/x{i}\n" for i in range(10_000))
    fallbacks = "".join(f"fallback m{i} -> m{i + 1}\n" for i in range(0, 10_000, 2))
    result = compile_source(HEAD + models + fallbacks + "route {\n  default -> m\n}\n", "long.ccm", {})
    assert result.errors == []
    assert result.table is not None and len(result.table.models) == 10_001


def test_many_misspelled_names_check_in_linear_time() -> None:
    """Each unknown name's did-you-mean compares it with every declared one: 2,000 of each took a minute (a 100 KB
    file). The hints have a budget of comparisons per compile; past it, the plain hint."""
    count = 4_000
    models = "".join(f"model model{i} = a/x{i}\n" for i in range(count))
    rules = "".join(f"  websearch -> mdl{i}x\n" for i in range(count))
    started = time.perf_counter()
    result = compile_source(HEAD + models + "route {\n" + rules + "  default -> model0\n}\n", "typos.ccm", {})
    elapsed = time.perf_counter() - started
    assert len(result.errors) == count
    assert result.errors[0].hint == "did you mean `model0`?"
    assert result.errors[-1].hint == f"declare it: model mdl{count - 1}x = provider/model"
    assert elapsed < 10, f"{elapsed:.1f} s"


DEEP = {
    "parentheses": _route("(" * 990 + "websearch" + ")" * 990),
    "nots": _route("not " * 990 + "websearch"),
    "nots and parentheses": _route("not (" * 500 + "websearch" + ")" * 500),
    "objects": _request("{ a: " * 990 + "1" + " }" * 990),
    "arrays": _request("[" * 990 + "]" * 990),
}


@pytest.mark.parametrize("text", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_is_a_diagnostic(text: str) -> None:
    with pytest.raises(RouteSyntaxError) as raised:
        parse(text, "deep.ccm")
    diagnostic = raised.value.diagnostic
    assert diagnostic.message == f"nested too deeply (limit {MAX_NESTING})"
    # the caret is at the first opening past the limit, on the line it is written on
    assert diagnostic.line in (7, 11) and diagnostic.source_line is not None
    assert diagnostic.source_line[diagnostic.column - 1] in "({[n"


@pytest.mark.parametrize("command", [["check"], ["fmt", "--check"], ["table"]])
def test_deep_nesting_reaches_the_cli_as_a_diagnostic(command: list[str], tmp_path: Path) -> None:
    path = tmp_path / "deep.ccm"
    path.write_text(DEEP["parentheses"])
    result = CliRunner().invoke(main, [*command, str(path)])
    assert result.exit_code == 1
    assert f"deep.ccm:7:{MAX_NESTING + 2}: error: nested too deeply (limit {MAX_NESTING})" in result.stderr
    assert "Traceback" not in result.output and "RecursionError" not in result.output


def _deepest_condition() -> str:
    """`(atom and (not atom or (…)))` as deep as the limit allows, inside `route {` (one level itself)."""
    condition, depth, atoms = "websearch", 1, ["image", "thinking", "subagent", "websearch"]
    for i in range(MAX_NESTING):
        negated = i % 3 == 0
        if depth + 1 + negated > MAX_NESTING - 1:
            break
        condition = f"({'not ' if negated else ''}{atoms[i % 4]} {'and' if i % 2 else 'or'} {condition})"
        depth += 1 + negated
    return condition


def _deepest_object() -> str:
    half = (MAX_NESTING - 3) // 2  # inside `test {`, `request {` and the body's own braces
    return "{ a: [" * half + "1" + "] }" * half


def _with_frames(frames: int, call: Callable[[], Any]) -> Any:
    """Run `call` with `frames` Python frames already on the stack (a server's, a test runner's)."""
    return call() if frames == 0 else _with_frames(frames - 1, call)


def test_everything_that_reads_a_tree_copes_at_the_limit() -> None:
    text = _request(_deepest_object()).replace("websearch -> m", f"{_deepest_condition()} -> m")
    result = compile_source(text, "deepest.ccm", {})
    assert result.errors == [] and result.table is not None
    table = result.table
    request = {**table.tests[0].request, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}

    def every_reader() -> None:
        compile_source(text, "deepest.ccm", {})
        format_source(text, "deepest.ccm")
        table.model_dump_json()
        assert run_route_tests(table) == []
        select_route(table, request)

    _with_frames(400, every_reader)


# Peak RSS from VmHWM, this process's own: ru_maxrss carries over the forking parent's (pytest's) peak on Linux.
_MEASURE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ccm.compile import compile_file
    started = time.perf_counter()
    result = compile_file(Path(sys.argv[1]), {})
    assert result.table is not None, result.diagnostics[:3]
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) * 1024
    print(time.perf_counter() - started, peak)
""")


def _measure(path: Path) -> tuple[float, int]:
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, rss = done.stdout.split()
    return float(seconds), int(rss)


def _statements(count: int) -> str:
    """Top-level statements (the shape that recursed and went quadratic) and rules, ~90 bytes each."""
    models = "".join(f"model m{i} = a/upstream-model-{i} {{ context 200k }}\n" for i in range(count // 2))
    rules = "".join(f'  header "x-route-{i}" ~ "team-{i}-*" and not image -> m{i}\n' for i in range(count // 2))
    return HEAD + models + "route {\n" + rules + "  default -> m\n}\n"


def test_memory_grows_linearly_with_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small, large = tmp_path / "small.ccm", tmp_path / "large.ccm"
    small.write_text(_statements(2_000))
    large.write_text(_statements(12_000))
    size_small, size_large = small.stat().st_size, large.stat().st_size
    _, rss_small = _measure(small)
    seconds, rss_large = _measure(large)
    per_byte = (rss_large - rss_small) / (size_large - size_small)
    with capsys.disabled():
        print(f"\ncompile of {size_large / 1e6:.1f} MB: {seconds:.1f} s, peak RSS {rss_large / 1e6:.0f} MB "
              f"({per_byte:.0f} bytes of memory per byte of file)")
    assert 0 < per_byte < 400, f"{per_byte:.0f} bytes of memory per byte of route file"
    assert rss_large < 1_000_000_000
    assert seconds < 60

