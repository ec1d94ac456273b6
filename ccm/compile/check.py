"""The one check: compile a route file and run its own tests.

    check(path | RouteText, environ, *, run_tests=True) -> Checked

`ccm check`, `ccm run`, the reloader and the admin editor all call this, so "the file is good" means the same
everywhere: it compiled without errors and every in-file test passed. Warnings never make a file bad.

A `RouteText` is a route file's text that is not on disk as such (stdin, the editor's buffer): its includes and
request files resolve against `base_dir`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from pathlib import Path

from ccm.compile import CompileResult, compile_file, compile_source
from ccm.compile.route_tests import run_route_tests
from ccm.diagnostics import Diagnostic
from ccm.frozen import frozen
from ccm.table import RoutingTable


@frozen
class RouteText:
    text: str
    name: str  # how diagnostics name it: "<stdin>", the file it will be saved as
    base_dir: Path


@frozen
class Checked:
    """What checking a route file found. `table` is the table only when the file is good (no error, no failing
    test); `compiled` is the table whenever it compiled, for commands that show it without running its tests."""

    compiled: RoutingTable | None
    diagnostics: tuple[Diagnostic, ...] = ()  # the compiler's errors and warnings, in file order
    failures: tuple[Diagnostic, ...] = ()  # the in-file tests that failed (empty when they were not run)
    sources: Mapping[str, str] = field(default_factory=dict)  # every file read: name -> text

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if not d.is_error)

    @property
    def table(self) -> RoutingTable | None:
        return self.compiled if not self.failures else None  # (the compiler gives no table when it found an error)

    @property
    def ok(self) -> bool:
        return self.table is not None

    @property
    def problems(self) -> tuple[Diagnostic, ...]:
        """What makes the file bad: its errors, then its failing tests."""
        return self.errors + self.failures

    @property
    def reported(self) -> tuple[Diagnostic, ...]:
        """Everything to show a person: the compiler's diagnostics, then the failing tests."""
        return self.diagnostics + self.failures


def check(
    source: Path | RouteText, environ: Mapping[str, str] | None = None, *, run_tests: bool = True
) -> Checked:
    """Compile `source` (the environment is read only to warn about unset variables) and, when it compiled and
    `run_tests`, run its tests."""
    if isinstance(source, RouteText):
        result = compile_source(source.text, source.name, environ, base_dir=source.base_dir)
    else:
        result = compile_file(source, environ)
    return _checked(result, run_tests)


def _checked(result: CompileResult, run_tests: bool) -> Checked:
    failures: tuple[Diagnostic, ...] = ()
    if run_tests and result.table is not None and result.table.tests:
        failures = tuple(run_route_tests(result.table, result.sources))
    return Checked(result.table, tuple(result.diagnostics), failures, result.sources)
