"""Read a route file and everything it includes, parsed, in the order the statements take effect.

An `include "x.ccm"` is resolved against the including file's folder and replaced by the included file's statements,
so an include behaves as if its text were written at that point. A file included twice (a diamond) is read once;
an include cycle, a missing file or a syntax error is a diagnostic. A file with a syntax error contributes no
statements: the rest still compiles, so every other problem is reported too.

Included files are read as `ccm.compile.files` allows (inside the route file's folder or `CCM_INCLUDE_PATH`,
regular files, at most 1 MB). One that does not parse may be no route file at all (`include ".env"`), so its
syntax error is reported by position only: nothing of its text is quoted, in the message, the source line or the
caret, and its text is not kept for later diagnostics.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ccm.compile.files import MAX_INCLUDE_BYTES, FileRefused, read_confined
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
    roots: tuple[Path, ...] = ()  # the folders named files may be read from (ccm.compile.files.include_roots)

    def version(self) -> str:
        """A short hash over every source's name and bytes: changes whenever any file read changes."""
        digest = hashlib.sha256()
        for name, data in zip(self.sources, self.raw, strict=True):
            digest.update(name.encode() + b"\0" + data + b"\0")
        return digest.hexdigest()[:12]


def _display_name(base: Path, written: str) -> str:
    return os.path.normpath(base / written) if not os.path.isabs(written) else written


def load(text: str, name: str, base_dir: Path, identity: str | None = None, roots: tuple[Path, ...] = ()) -> Loaded:
    """`identity` is the main file's resolved path when it is a file (so an include of it is seen as a cycle);
    `roots` the folders includes may read from (default: `base_dir` alone)."""
    loaded = Loaded(roots=roots or (base_dir.resolve(),))
    _read(loaded, text, name, base_dir, identity, stack=[])
    return loaded


def _read(loaded: Loaded, text: str, name: str, base_dir: Path, identity: str | None, stack: list[str],
          included_at: s.Span | None = None) -> None:
    loaded.sources.append(name)
    loaded.folders[name] = base_dir
    if identity:
        loaded.seen.add(identity)
    loaded.raw.append(text.encode("utf-8"))
    try:
        tree = parse(text, name)
    except RouteSyntaxError as error:
        loaded.diagnostics.append(error.diagnostic if included_at is None else _opaque(error.diagnostic, included_at))
        loaded.syntax_failed = True
        return
    loaded.lines.add(name, text)
    loaded.files.append(tree)
    here = stack + [identity] if identity else stack
    for statement in tree.statements:
        if isinstance(statement, s.Include):
            _include(loaded, statement, base_dir, here)
        else:
            loaded.statements.append(statement)


def _opaque(diagnostic: Diagnostic, included_at: s.Span) -> Diagnostic:
    """An included file's syntax error, by position only."""
    return Diagnostic(
        diagnostic.file, diagnostic.line, diagnostic.column, "error",
        "not a route file: syntax error here (an included file that does not parse is not quoted)",
        f"included at {included_at}; `ccm check {diagnostic.file}` shows the error itself",
    )


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
        data = read_confined(base_dir, written, loaded.roots, MAX_INCLUDE_BYTES)
        text = data.decode("utf-8")
    except FileRefused as refused:
        if refused.missing:
            problem(f"included file not found: `{written}`",
                    f"paths are relative to the including file's folder ({base_dir})")
        else:
            problem(f"cannot include `{written}`: {refused.message}", refused.hint)
        return
    except UnicodeDecodeError:
        problem(f"cannot include `{written}`: it is not UTF-8 text")
        return
    _read(loaded, text, _display_name(base_dir, written), path.parent, identity, stack, span)
