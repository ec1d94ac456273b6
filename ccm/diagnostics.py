"""Diagnostics: what the parser and compiler report, and how a person reads it.

A `Diagnostic` is self-contained (it carries its source line), so it renders the same wherever it travels: the CLI,
the hot-reload log, CI annotations (`to_json`). The rendered form is

    routes.ccm:12:20: error: unknown model `codr`
       12 |   effort >= high -> codr
          |                     ^^^^
    hint: did you mean `coder`?

`SourceLines` turns a span into a diagnostic with the right line and caret width, reading each file's text once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from ccm.frozen import frozen

Severity = Literal["error", "warning"]

# Where no end column is known, the caret covers the token at the column: a string, a word, or one character.
_TOKEN_AT = re.compile(r'"(?:[^"\\\n]|\\.)*"?|[\w./:@+-]+|\S')


@frozen
class Diagnostic:
    file: str
    line: int
    column: int
    severity: Severity
    message: str
    hint: str | None = None
    source_line: str | None = None
    width: int = 1  # how many carets
    code: str | None = None  # what kind of problem, for those who treat one kind apart (UNSET_VARIABLE)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def render(self) -> str:
        out = [f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"]
        if self.source_line is not None:
            gutter = f"{self.line:>5}"
            # Keep tabs from the source so the caret lines up under the token in a terminal.
            prefix = "".join(c if c == "\t" else " " for c in self.source_line[: self.column - 1])
            out.append(f"{gutter} | {self.source_line}".rstrip())
            out.append(f"{' ' * len(gutter)} | {prefix}{'^' * max(1, self.width)}")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


# An environment variable the file reads is not set: one line, no quoted source and no hint (the remedy is the
# environment's, never the file's). `ccm run` and reloads leave these to the providers' own one-line warnings.
UNSET_VARIABLE = "unset-variable"


def render_all(diagnostics: Iterable[Diagnostic]) -> str:
    """Each diagnostic rendered, a blank line around each that quotes its source; one-liners stay together."""
    out = ""
    previous_brief = False
    for diagnostic in diagnostics:
        brief = diagnostic.source_line is None and not diagnostic.hint
        if out:
            out += "\n" if brief and previous_brief else "\n\n"
        out += diagnostic.render()
        previous_brief = brief
    return out


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


class SourceLines:
    """Source text per file name, for quoting lines in diagnostics. Files not given are read from disk on demand."""

    def __init__(self, texts: Mapping[str, str] | None = None) -> None:
        self._lines: dict[str, list[str]] = {name: text.splitlines() for name, text in (texts or {}).items()}

    def add(self, name: str, text: str) -> None:
        self._lines[name] = text.splitlines()

    def line(self, file: str, line: int) -> str | None:
        lines = self._lines.get(file)
        if lines is None:
            try:
                lines = Path(file).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            self._lines[file] = lines
        return lines[line - 1] if 0 < line <= len(lines) else None

    def diagnostic(
        self,
        severity: Severity,
        file: str,
        line: int,
        column: int,
        message: str,
        hint: str | None = None,
        end_line: int | None = None,
        end_column: int | None = None,
    ) -> Diagnostic:
        source = self.line(file, line)
        if end_line == line and end_column is not None and end_column > column:
            width = end_column - column
        elif source is not None and end_line is not None and end_line > line:
            width = max(1, len(source) - column + 1)  # a construct spanning lines: underline to the line's end
        elif source is not None:
            found = _TOKEN_AT.match(source, column - 1)
            width = len(found.group(0)) if found else 1
        else:
            width = 1
        return Diagnostic(file, line, column, severity, message, hint, source, width)
