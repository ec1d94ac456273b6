"""A foreign config as the importers read it: its data, where each key was written, and what went wrong.

Every reader (JSON5, YAML, TOML) returns a `Document`: the parsed data (plain dicts, lists and scalars) and a map
from a key's path (`("Providers", 2, "api_base_url")`) to the line it was written on, so a problem found while
translating points at the line of the source that caused it. Problems are collected in a `Report`, errors and
warnings apart, and reported together: `file:line: severity: message`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ccm.frozen import frozen

Path = tuple[str | int, ...]
Severity = Literal["error", "warning"]


@frozen
class Problem:
    file: str
    line: int
    severity: Severity
    message: str

    def render(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


class ImportFailed(Exception):
    """The source could not be imported; `problems` says why (every error found, and the warnings so far)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.render() for p in problems))
        self.problems = problems


@dataclass
class Document:
    name: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int:
        """The line a path was written on, or that of its nearest written parent (1 when nothing is known)."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return 1


@dataclass
class Report:
    """What an importer found: errors stop the import, warnings say what was not carried over."""

    document: Document
    problems: list[Problem] = field(default_factory=list)

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.document.name, self.document.line(path), "error", message))

    def warn(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.document.name, self.document.line(path), "warning", message))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def raise_if_failed(self) -> None:
        if self.errors:
            raise ImportFailed(sorted(self.problems, key=lambda p: (p.severity != "error", p.line)))


def describe(value: object) -> str:
    """A value's kind as the user's file would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def dotted(path: Path) -> str:
    """`Providers[2].api_base_url`: a path as a person would write it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Reader:
    """Typed access to a document's data: each getter checks the type, reports a mismatch at the key's line and
    returns None (or a safe empty value), so an importer reports every problem of a file in one run."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def get(self, path: Path) -> Any:
        value: Any = self.report.document.data
        for part in path:
            if isinstance(part, int):
                if not isinstance(value, list) or part >= len(value):
                    return None
            elif not isinstance(value, dict):
                return None
            value = value[part] if isinstance(part, int) else value.get(part)
        return value

    def _typed(self, path: Path, kinds: tuple[type, ...], what: str, required: bool) -> Any:
        value = self.get(path)
        if value is None:
            if required:
                self.report.error(path, f"`{dotted(path)}` is missing")
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            subject = f"`{dotted(path)}`" if path else "the config"
            self.report.error(path, f"{subject} must be {what}, not {describe(value)}")
            return None
        return value

    def object(self, path: Path, *, required: bool = False) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._typed(path, (dict,), "an object", required)
        return found

    def list(self, path: Path, *, required: bool = False) -> builtins.list[Any] | None:
        found: builtins.list[Any] | None = self._typed(path, (list,), "a list", required)
        return found

    def string(self, path: Path, *, required: bool = False) -> str | None:
        found: str | None = self._typed(path, (str,), "a string", required)
        return found

    def integer(self, path: Path, *, required: bool = False) -> int | None:
        found = self._typed(path, (int, float), "a whole number", required)
        if isinstance(found, float):
            if not found.is_integer():
                self.report.error(path, f"`{dotted(path)}` must be a whole number, not {found}")
                return None
            return int(found)
        return found  # type: ignore[no-any-return]

    def number(self, path: Path, *, required: bool = False) -> float | None:
        found = self._typed(path, (int, float), "a number", required)
        return None if found is None else float(found)

    def boolean(self, path: Path, *, required: bool = False) -> bool | None:
        found: bool | None = self._typed(path, (bool,), "true or false", required)
        return found

    def strings(self, path: Path) -> builtins.list[str]:
        items = self.list(path)
        if items is None:
            return []
        out: builtins.list[str] = []
        for index, item in enumerate(items):
            if isinstance(item, str):
                out.append(item)
            else:
                self.report.error((*path, index), f"`{dotted((*path, index))}` must be a string, not {describe(item)}")
        return out

    def known_keys(self, path: Path, value: Mapping[str, Any], known: Iterable[str], *, strict: bool = True) -> None:
        """Report keys the importer does not know: an error where a misspelt key would silently change what is
        imported (`strict`), a warning in settings the importer does not translate anyway."""
        allowed = set(known)
        for key in value:
            if key in allowed:
                continue
            where = (*path, key)
            if strict:
                hint = _closest(key, allowed)
                self.report.error(where, f"unknown field `{dotted(where)}`" + (f" (did you mean `{hint}`?)" if hint
                                                                              else ""))
            else:
                self.report.warn(where, f"`{dotted(where)}` is not carried over (ccm has no such setting)")


def _closest(word: str, candidates: Iterable[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return found[0] if found else None
