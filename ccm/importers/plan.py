"""What an importer decides, before it is text: the route file as plain data.

Each importer fills a `RoutePlan` (providers, models, rules, fallback chains, settings, tests, and the list of what
could not be carried over); `ccm.importers.writer` turns it into a formatted routes.ccm. Keeping the decision apart
from the printing means every importer writes the language the same way, and the tests can read the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ccm.frozen import frozen


@frozen
class Env:
    """`env("NAME")`: a value read from the environment when ccm runs, never written into the file."""

    name: str
    default: str | None = None


Text = str | Env  # a literal string, or a value from the environment


@dataclass
class ProviderPlan:
    name: str
    type: str  # anthropic | openai | gemini | openai-responses
    url: Text
    key: Env | None = None
    headers: dict[str, Text] = field(default_factory=dict)
    timeouts: dict[str, str] = field(default_factory=dict)  # connect/first_byte/idle/total → a duration
    concurrency: int | None = None
    comments: list[str] = field(default_factory=list)


@frozen
class DeploymentPlan:
    provider: str
    model: str
    weight: int | None = None

    @property
    def target(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass
class ModelPlan:
    alias: str
    deployments: list[DeploymentPlan]
    context: int | None = None
    max_output: int | None = None
    price: dict[str, Decimal] = field(default_factory=dict)  # input, output, cache_read, cache_write (per million)
    force: dict[str, Any] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)
    quirks: list[str] = field(default_factory=list)
    balance: str | None = None
    comments: list[str] = field(default_factory=list)


@frozen
class RulePlan:
    """`condition -> target`; a rule with neither is the `direct` line."""

    condition: str | None
    target: str | None = None
    comment: str | None = None

    @classmethod
    def direct(cls, comment: str | None = None) -> RulePlan:
        return cls(None, None, comment)


@frozen
class TestPlan:
    name: str
    request: dict[str, Any]
    expect: str
    tokens: int | None = None


@dataclass
class RoutePlan:
    title: list[str]
    auth: list[Text] = field(default_factory=list)
    background: list[str] = field(default_factory=list)  # `settings { background … }` globs; empty: ccm's default
    providers: list[ProviderPlan] = field(default_factory=list)
    models: list[ModelPlan] = field(default_factory=list)
    rules: list[RulePlan] = field(default_factory=list)
    fallbacks: list[tuple[str, list[str]]] = field(default_factory=list)
    retry: str | None = None  # the file-wide `retry …` statement, without the keyword
    breaker: str | None = None
    tests: list[TestPlan] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)  # `file:line: message`, as the report prints them

    def model(self, alias: str) -> ModelPlan:
        return next(m for m in self.models if m.alias == alias)


# --- names ---------------------------------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_MODEL_ID = re.compile(r"[A-Za-z0-9_.:/@+-]*[A-Za-z0-9_.:@+]")


def is_name(text: str) -> bool:
    return _NAME.fullmatch(text) is not None


def is_model_id(text: str) -> bool:
    """Whether a model id can stand after `provider/` in a route file."""
    return _MODEL_ID.fullmatch(text) is not None


def name_from(text: str, fallback: str = "model") -> str:
    """A route-file name made from any text: `gpt-3.5-turbo` → `gpt-3-5-turbo`, `zai coding plan` →
    `zai-coding-plan`."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    name = re.sub(r"-{2,}", "-", name)
    if not name:
        return fallback
    if not (name[0].isalpha() or name[0] == "_"):
        name = f"{fallback}-{name}"
    return name


def env_name(text: str) -> str:
    """`zai coding plan` → `ZAI_CODING_PLAN`: a name made from text, fit for an environment variable."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()
    return name if name and not name[0].isdigit() else f"_{name}"


class Names:
    """Hands out names no one else in the file has: the second `openai` becomes `openai-2`."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def claim(self, wanted: str) -> str:
        name, n = wanted, 2
        while name in self.taken:
            name = f"{wanted}-{n}"
            n += 1
        self.taken.add(name)
        return name


# --- quantities ----------------------------------------------------------------------------------------------------


def tokens_text(count: int) -> str:
    """Token counts as a person writes them: 60000 → `60k`, 8192 → `8192`, 1000000 → `1m`."""
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}m"
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000}k"
    return str(count)


def duration_text(milliseconds: float) -> str:
    """600000 → `10m`, 1500 → `1500ms`: the largest unit that states the duration exactly."""
    ms = int(round(milliseconds))
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
