"""What every compiler pass shares: the diagnostics being collected, the source lines they quote, the environment
(read only to warn about unset variables), and the names declared so far with where they were declared."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from ccm import table as t
from ccm.compile.values import BadValue, check_glob
from ccm.diagnostics import UNSET_VARIABLE, Diagnostic, Severity, SourceLines, did_you_mean
from ccm.dsl import syntax as s

T = TypeVar("T")

# How many names did-you-mean hints may compare, in all, per compile. Each hint compares a name with every declared
# one (difflib, quadratic in the worst case): without a budget, a 100 KB file of 2,000 models and 2,000 misspelled
# references took a minute to check. 100,000 comparisons take well under a second; a file with 100 models gets
# 1,000 hints before the budget runs out.
HINT_BUDGET = 100_000


def table_span(span: s.Span) -> t.Span:
    return t.Span(file=span.file, line=span.line, column=span.column)


@dataclass
class Context:
    lines: SourceLines
    environ: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    providers: dict[str, t.Provider] = field(default_factory=dict)
    provider_spans: dict[str, s.Span] = field(default_factory=dict)
    models: dict[str, t.Model] = field(default_factory=dict)  # declared aliases, then literals in reference order
    model_spans: dict[str, s.Span] = field(default_factory=dict)
    _env_warned: set[str] = field(default_factory=set)
    secrets: list[s.Str] = field(default_factory=list)  # credentials written literally, masked in quoted lines
    _errors: int = 0  # kept as diagnostics are added: `failed` is asked once per declaration
    _hints_left: int = HINT_BUDGET

    # --- reporting --------------------------------------------------------------------------------------------

    def report(self, severity: Severity, span: s.Span, message: str, hint: str | None = None) -> None:
        self._errors += severity == "error"
        self.diagnostics.append(
            self.lines.diagnostic(severity, span.file, span.line, span.column, message, hint,
                                  span.end_line, span.end_column)
        )

    def secret_written(self, node: s.Str, message: str, hint: str) -> None:
        """A warning at a credential written literally in the file. Every diagnostic quoting its line shows it masked
        (`mask_secrets`): the file is in git already, a CI log need not be another copy."""
        self.secrets.append(node)
        self.warning(node.span, message, hint)

    def error(self, span: s.Span, message: str, hint: str | None = None) -> None:
        self.report("error", span, message, hint)

    def warning(self, span: s.Span, message: str, hint: str | None = None) -> None:
        self.report("warning", span, message, hint)

    @property
    def failed(self) -> bool:
        return self._errors > 0

    def suggest(self, word: str, candidates: Callable[[], Iterable[str]]) -> str | None:
        """A did-you-mean hint among `candidates()`, while the compile's budget of comparisons lasts."""
        if self._hints_left <= 0:
            return None
        names = list(candidates())
        self._hints_left -= len(names)
        return did_you_mean(word, names) if self._hints_left >= 0 else None

    def read(self, reader: Callable[[str], T], word: s.Word) -> T | None:
        """Apply a value reader to a written word; a bad value becomes an error at the word."""
        try:
            return reader(word.text)
        except BadValue as bad:
            self.error(word.span, bad.message, bad.hint)
            return None

    def choose(self, word: s.Word, allowed: tuple[str, ...], what: str) -> str | None:
        """A word that must be one of a fixed set (provider types, effort levels, quirks…)."""
        if word.text in allowed:
            return word.text
        hint = did_you_mean(word.text, allowed) or "one of: " + ", ".join(allowed)
        self.error(word.span, f"unknown {what} `{word.text}`", hint)
        return None

    def glob(self, node: s.Str) -> str | None:
        try:
            check_glob(node.value)
        except BadValue as bad:
            self.error(node.span, bad.message, bad.hint)
            return None
        return node.value

    # --- values -----------------------------------------------------------------------------------------------

    def value(self, node: s.Arg | s.JsonValue, optional: bool = False,
              secret: bool = False) -> t.Literal_ | t.EnvRef | t.FileRef | None:
        """A configurable string: a literal, an environment reference or (for a `secret`) a file. Warns once per
        unset variable or unreadable file, unless the value is `optional` (something else stands in while unset)."""
        if isinstance(node, s.Str):
            return t.Literal_(value=node.value)
        if isinstance(node, s.FileRef):
            if not secret:
                self.error(node.span, "`file(...)` holds a secret: it is for `key`, `auth` and header values")
                return None
            if not node.path.value:
                self.error(node.path.span, "empty file name")
                return None
            path = Path(node.span.file).parent / node.path.value
            ref = t.FileRef(path=str(Path(os.path.abspath(path))))
            # whether it could be read, never its contents: a route file in CI must not read files outside its folder
            readable = os.path.isfile(ref.path) and os.access(ref.path, os.R_OK)
            if not optional and not readable and ref.path not in self._env_warned:
                self._env_warned.add(ref.path)
                span = node.span
                self.diagnostics.append(Diagnostic(span.file, span.line, span.column, "warning",
                                                   f"file `{ref.path}` cannot be read", code=UNSET_VARIABLE))
            return ref
        if isinstance(node, s.Env):
            name = node.name.value
            if not name:
                self.error(node.name.span, "empty environment variable name")
                return None
            if node.default is None and not optional and not self.environ.get(name) and name not in self._env_warned:
                self._env_warned.add(name)
                span = node.span
                self.diagnostics.append(Diagnostic(span.file, span.line, span.column, "warning",
                                                   f"environment variable `{name}` is not set", code=UNSET_VARIABLE))
            default = node.default.value if node.default is not None else None
            return t.EnvRef(name=name, default=default)
        self.error(node.span, "expected a string or env(\"NAME\")" + (" or file(\"PATH\")" if secret else ""))
        return None

    # --- names ------------------------------------------------------------------------------------------------

    def target(self, word: s.Word) -> str | None:
        """The `RoutingTable.models` key a rule, fallback or test names; literal `provider/model` targets are added
        as undeclared models. Unknown names are errors with a did-you-mean."""
        text = word.text
        if "/" in text:
            provider, _, model_id = text.partition("/")
            if provider not in self.providers:
                if provider not in self.provider_spans:  # a provider with errors was declared: no second report
                    hint = (self.suggest(provider, lambda: self.providers)
                            or f"declare it: provider {provider} {{ … }}")
                    self.error(word.span, f"unknown provider `{provider}` in `{text}`", hint)
                return None
            if text not in self.models:
                self.models[text] = t.Model(name=text, provider=provider, model=model_id, declared=False)
            return text
        if text in self.models and self.models[text].declared:
            return text
        if text not in self.model_spans:
            declared = lambda: (name for name, m in self.models.items() if m.declared)  # noqa: E731
            hint = self.suggest(text, declared) or f"declare it: model {text} = provider/model"
            self.error(word.span, f"unknown model `{text}`", hint)
        return None


def mask_secrets(diagnostics: list[Diagnostic], secrets: list[s.Str]) -> list[Diagnostic]:
    """The diagnostics with every literal credential in their quoted line masked, character for character (`"sk-****…"`:
    columns and carets stay where they were)."""
    by_line: dict[tuple[str, int], list[s.Str]] = {}
    for node in secrets:
        if node.span.end_line == node.span.line:
            by_line.setdefault((node.span.file, node.span.line), []).append(node)
    if not by_line:
        return diagnostics
    masked = []
    for diagnostic in diagnostics:
        on_line = by_line.get((diagnostic.file, diagnostic.line))
        if on_line and diagnostic.source_line is not None:
            line = diagnostic.source_line
            for node in on_line:
                start, end = node.span.column, node.span.end_column - 2  # inside the quotes, 0-based
                inner = line[start:end]
                shown = t.redacted(node.value)
                visible = shown.partition("…")[0] if "…" in shown else ""  # what `ccm table` shows of it too
                kept = visible if inner.startswith(visible) else ""
                line = line[:start] + kept + "*" * (len(inner) - len(kept)) + line[end:]
            diagnostic = replace(diagnostic, source_line=line)
        masked.append(diagnostic)
    return masked
