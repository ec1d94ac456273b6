"""Other routers' configs → a formatted routes.ccm that `ccm check` accepts.

    import_source(kind, text, name) -> Imported       raises ImportFailed (every `file:line: error`)

`kind` is one of FORMATS: `ccr` (claude-code-router's config.json), `litellm` (LiteLLM proxy's config.yaml),
`ccm-toml` (claude-code-mux's config.toml). Each format has a reader (text → `Document` with key lines) and a
converter (`Document` → `RoutePlan`); `ccm.importers.writer` prints the plan. `Imported.warnings` is the report of
what could not be carried over; the same lines head the generated file as comments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath

from ccm.frozen import frozen
from ccm.importers.plan import RoutePlan
from ccm.importers.source import Document, ImportFailed, Problem, Report

__all__ = ["FORMATS", "ImportFailed", "Imported", "Problem", "import_source"]

Reader = Callable[[str, str], Document]
Converter = Callable[[Document, Report], RoutePlan]


@frozen(slots=False)
class Imported:
    text: str  # the route file, formatted
    plan: RoutePlan
    warnings: list[Problem]


def _ccr() -> tuple[Reader, Converter]:
    from ccm.importers import ccr
    from ccm.importers.json5 import load_json5

    return load_json5, ccr.convert


def _litellm() -> tuple[Reader, Converter]:
    from ccm.importers import litellm
    from ccm.importers.readers import load_yaml

    return load_yaml, litellm.convert


def _mux() -> tuple[Reader, Converter]:
    from ccm.importers import mux
    from ccm.importers.readers import load_toml

    return load_toml, mux.convert


# name on the command line → (what it is, where it usually lives, how to load its reader and converter)
FORMATS: dict[str, tuple[str, str, Callable[[], tuple[Reader, Converter]]]] = {
    "ccr": ("claude-code-router", "~/.claude-code-router/config.json", _ccr),
    "litellm": ("LiteLLM proxy", "config.yaml", _litellm),
    "ccm-toml": ("claude-code-mux", "~/.claude-code-mux/config.toml", _mux),
}


def import_source(kind: str, text: str, name: str, output_name: str = "routes.ccm") -> Imported:
    from ccm.importers.writer import write_route_file

    read, convert = FORMATS[kind][2]()
    document = read(text, name)
    report = Report(document)
    plan = convert(document, report)
    report.raise_if_failed()
    warnings = sorted(report.warnings, key=lambda p: p.line)
    short = PurePath(name).name
    plan.not_carried = [f"{short}:{w.line}: {w.message}" for w in warnings]
    return Imported(write_route_file(plan, output_name), plan, warnings)
