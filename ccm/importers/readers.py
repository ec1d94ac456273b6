"""YAML (LiteLLM) and TOML (claude-code-mux) read into a `Document`: the data and the line of every key.

YAML comes from PyYAML's composed node tree, whose marks give exact lines. `tomllib` keeps no positions, so a TOML
file's keys are located by a line scan that follows `[table]` and `[[array]]` headers: exact for the flat files
claude-code-mux writes, approximate for keys inside multi-line inline tables (they get the line of their table).
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from ccm.importers.source import Document, ImportFailed, Path, Problem


def load_yaml(text: str, name: str) -> Document:
    import yaml  # only `ccm import litellm` pays for PyYAML

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        raise ImportFailed([Problem(name, line, "error", message)]) from None
    lines: dict[Path, int] = {}
    if root is not None:
        _yaml_lines(root, (), lines)
    return Document(name, data, lines)


def _yaml_lines(node: Any, path: Path, lines: dict[Path, int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                where = (*path, str(key.value))
                lines[where] = key.start_mark.line + 1
                _yaml_lines(value, where, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _yaml_lines(item, (*path, index), lines)


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r'^\s*((?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|'
                  r"[A-Za-z0-9_-]+))*)\s*=")


def load_toml(text: str, name: str) -> Document:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = _TOML_POSITION.search(message)
        line = int(found.group(1)) if found else 1
        message = _TOML_POSITION.sub("", message).strip()
        if found:
            message += f" (column {found.group(2)})"
        raise ImportFailed([Problem(name, line, "error", f"not valid TOML: {message}")]) from None
    return Document(name, data, _toml_lines(text))


def _toml_keys(dotted: str) -> list[str]:
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', dotted)
    return [a or b or c for a, b, c in parts]


def _toml_lines(text: str) -> dict[Path, int]:
    lines: dict[Path, int] = {}
    counts: dict[Path, int] = {}  # how many of each [[array]] were opened, under its current parent
    arrays: set[tuple[str, ...]] = set()  # names of arrays of tables, without indexes
    table: Path = ()
    depth = 0  # open brackets of a multi-line value
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count('"""') % 2 or line.count("'''") % 2:
            in_string = not in_string
            continue
        if in_string:
            continue
        if depth > 0:
            depth += _brackets(line)
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            names = _toml_keys(header.group(2))
            if header.group(1) == "[[":
                arrays.add(tuple(names))
            table = _indexed(names, arrays, counts, opening=header.group(1) == "[[")
            lines[table] = number
            continue
        key = _KEY.match(line)
        if key:
            where = (*table, *_toml_keys(key.group(1)))
            lines.setdefault(where, number)
            depth = max(0, _brackets(line[key.end():]))
    return lines


def _indexed(names: list[str], arrays: set[tuple[str, ...]], counts: dict[Path, int], *, opening: bool) -> Path:
    """A header's path with the current index of every array of tables on the way (`models`, 1, `mappings`, 0)."""
    path: Path = ()
    for depth, part in enumerate(names):
        path = (*path, part)
        if tuple(names[: depth + 1]) in arrays:
            last = depth == len(names) - 1
            if last and opening:
                counts[path] = counts.get(path, -1) + 1
            path = (*path, counts.get(path, 0))
    return path


def _brackets(text: str) -> int:
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text.split("#", 1)[0])
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")
