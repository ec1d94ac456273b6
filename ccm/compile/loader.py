"""Read a route file and everything it includes, parsed, in the order the statements take effect.

An `include "x.ccm"` is resolved against the including file's folder and replaced by the included file's statements,
so an include behaves as if its text were written at that point. A file included twice (a diamond) is read once;
an include cycle, a missing file or a syntax error is a diagnostic. A file with a syntax error contributes no
statements: the rest still compiles, so every other problem is reported too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ccm.diagnostics import Diagnostic, SourceLines
from ccm.dsl import RouteSyntaxError, parse
from ccm.dsl import syntax as s


@dataclass
class Loaded:
    statements: list[s.Statement] = field(default_factory=list)
    files: list[s.SourceFile] = field(default_factory=list)  # every file read, main first
    sources: list[str] = field(default_factory=list)  # their names, in reading order
    raw: list[bytes] = field(default_factory=list)
    lines: SourceLines = field(default_factory=SourceLines)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    syntax_failed: bool = False
    seen: set[str] = field(default_factory=set)  # resolved paths of the files read
    folders: dict[str, Path] = field(default_factory=dict)  # file name → the folder its relative paths start from

    def version(self) -> str:
        """A short hash over every source's name and bytes: changes whenever any file read changes."""
        digest = hashlib.sha256()
        for name, data in zip(self.sources, self.raw):
            digest.update(name.encode() + b"\0" + data + b"\0")
        return digest.hexdigest()[:12]


def _display_name(base: Path, written: str) -> str:
    return os.path.normpath(base / written) if not os.path.isabs(written) else written


def load(text: str, name: str, base_dir: Path, identity: str | None = None) -> Loaded:
    """`identity` is the main file's resolved path when it is a file (so an include of it is seen as a cycle)."""
    loaded = Loaded()
    _read(loaded, text, name, base_dir, identity, stack=[])
    return loaded


def _read(loaded: Loaded, text: str, name: str, base_dir: Path, identity: str | None, stack: list[str]) -> None:
    loaded.sources.append(name)
    loaded.folders[name] = base_dir
    if identity:
        loaded.seen.add(identity)
    loaded.raw.append(text.encode("utf-8"))
    loaded.lines.add(name, text)
    try:
        tree = parse(text, name)
    except RouteSyntaxError as error:
        loaded.diagnostics.append(error.diagnostic)
        loaded.syntax_failed = True
        return
    loaded.files.append(tree)
    here = stack + [identity] if identity else stack
    for statement in tree.statements:
        if isinstance(statement, s.Include):
            _include(loaded, statement, base_dir, here)
        else:
            loaded.statements.append(statement)


def _include(loaded: Loaded, include: s.Include, base_dir: Path, stack: list[str]) -> None:
    written = include.path.value
    path = base_dir / written
    identity = str(path.resolve())
    span = include.path.span

    def problem(message: str, hint: str | None = None) -> None:
        loaded.diagnostics.append(
            loaded.lines.diagnostic("error", span.file, span.line, span.column, message, hint,
                                    span.end_line, span.end_column)
        )

    if identity in stack:
        chain = " -> ".join(Path(p).name for p in [*stack[stack.index(identity):], identity])
        problem(f"include cycle: {chain}", "an included file must not include, directly or not, the file itself")
        return
    if identity in loaded.seen:
        return
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem(f"included file not found: `{written}`", f"paths are relative to the including file's folder ({base_dir})")
        return
    except (OSError, UnicodeDecodeError) as error:
        problem(f"cannot read included file `{written}`: {error.__class__.__name__}")
        return
    _read(loaded, text, _display_name(base_dir, written), path.parent, identity, stack)

