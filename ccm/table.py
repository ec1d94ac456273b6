"""The compiled routing table: the one contract between the route language and the server.

The compiler (`ccm.compile`) is the only producer; the server, `select_route`, `ccm explain`, `ccm table` and the
in-file tests are readers. Everything is frozen: a reload builds a new table and swaps one reference.

Secrets should not live here as values. A configurable string is a `Value`: a literal, or a reference to an
environment variable (with an optional default) resolved at run time by `resolve`; an env reference serialises as
`env(NAME)`. A key written literally in the route file (the compiler warns) is a value all the same, so the fields
that hold credentials say so in their type: a `SecretValue` (a provider's `key`, the inbound `auth` keys) and a
credential header's value (`is_credential_header`) serialise a literal redacted (`sk-…(redacted)`). Serialising a
table therefore never shows a key, in `ccm table`, `ccm explain` or anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PrivateAttr, field_serializer, model_serializer


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Span(Frozen):
    """Where a construct was written: used by diagnostics and by `explain` to point at the matching rule."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# --- values that may come from the environment -------------------------------------------------------------------


class Literal_(Frozen):
    kind: Literal["literal"] = "literal"
    value: str

    @model_serializer
    def _show(self) -> str:
        return self.value


class EnvRef(Frozen):
    kind: Literal["env"] = "env"
    name: str
    default: str | None = None

    @model_serializer
    def _show(self) -> str:
        # The default is written in the route file (so in git) and is shown; the variable's value never is.
        return f"env({self.name})" if self.default is None else f'env({self.name}, "{self.default}")'


class FileRef(Frozen):
    """`file("/run/secrets/openai")`: a secret read from a file when the table is resolved (at start and on every
    reload), its trailing newline stripped; shown as `file(PATH)`, never its contents. A missing, unreadable or
    empty file counts as an unset variable. `path` is absolute (the compiler resolves it from the route file's
    folder)."""

    kind: Literal["file"] = "file"
    path: str

    @model_serializer
    def _show(self) -> str:
        return f"file({self.path})"

    def read(self) -> str | None:
        try:
            with open(self.path, encoding="utf-8") as secret:
                text = secret.read(MAX_SECRET_FILE + 1)
        except (OSError, UnicodeDecodeError):
            return None
        if len(text) > MAX_SECRET_FILE:
            return None
        return text.removesuffix("\n").removesuffix("\r") or None


MAX_SECRET_FILE = 64 * 1024  # a secret, not a document: a bigger file is refused like a missing one

Value = Annotated[Literal_ | EnvRef | FileRef, Field(discriminator="kind")]

REDACTED = "(redacted)"


def redacted(secret: str) -> str:
    """How a literal secret is shown: its auth scheme if it has one (`Bearer `), then its first three characters when
    it is long enough for them to say which kind of key it is (`sk-`, `AIz`) and nothing else, then `…(redacted)`."""
    scheme = next((secret[: len(s)] for s in AUTH_SCHEMES if secret.lower().startswith(s)), "")
    rest = secret[len(scheme) :]
    return scheme + (f"{rest[:3]}…{REDACTED}" if len(rest) >= 16 else REDACTED)


def show_secret(value: Literal_ | EnvRef | FileRef) -> str:
    return redacted(value.value) if isinstance(value, Literal_) else str(value.model_dump())


# A value that is a credential: used as any value at run time, serialised without its literal.
SecretValue = Annotated[Value, PlainSerializer(show_secret, return_type=str)]

# Header names that carry a credential (lower case), and words that make a header name one (`x-portkey-api-key`,
# `helicone-auth`). A value written with an auth scheme (`Bearer …`) is one whatever its header.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key",
                                "x-goog-api-key"})
CREDENTIAL_WORDS = ("key", "token", "secret", "auth", "password", "session", "signature", "credential", "cookie")
AUTH_SCHEMES = ("bearer ", "basic ", "token ", "digest ")

# What `ccm env` and `ccm code` give Claude Code as its API key when the user has no credentials of their own (Claude
# Code will not start without one). It is nobody's key: admission drops it, and a provider never takes it as its own
# key, even when the shell `ccm run` starts in has it as ANTHROPIC_API_KEY.
PLACEHOLDER_KEY = "ccm-local"
# Where a client sends ccm's own inbound key (`ccm env` puts it in ANTHROPIC_CUSTOM_HEADERS), so that x-api-key and
# Authorization stay the client's own credentials for Anthropic.
CCM_KEY_HEADER = "x-ccm-key"


def is_credential_header(name: str, value: str | None = None) -> bool:
    lowered = name.lower()
    if lowered in CREDENTIAL_HEADERS or any(word in lowered for word in CREDENTIAL_WORDS):
        return True
    return value is not None and value.lower().startswith(AUTH_SCHEMES)


def resolve(value: Value | None, environ: Mapping[str, str]) -> str | None:
    """The run-time string for a value; None when it is an unset variable without default (or a secret file that
    cannot be read)."""
    if value is None:
        return None
    if isinstance(value, Literal_):
        return value.value
    if isinstance(value, FileRef):
        return value.read()
    found = environ.get(value.name)
    return found if found not in (None, "") else value.default


# --- providers -----------------------------------------------------------------------------------------------------

ProviderType = Literal["anthropic", "openai", "gemini", "openai-responses"]
RetryOn = Literal["429", "5xx", "529", "timeout", "connect"]
AuthStyle = Literal["x-api-key", "bearer", "x-goog-api-key"]

# How each wire type sends its key unless the file says otherwise.
DEFAULT_AUTH: dict[str, AuthStyle] = {
    "anthropic": "x-api-key",
    "openai": "bearer",
    "openai-responses": "bearer",
    "gemini": "x-goog-api-key",
}


class Timeouts(Frozen):
    """Seconds. `first_byte` bounds the wait for the first upstream event; `idle` the gap between stream chunks.
    `first_byte` is 30 s by default so that an upstream that hangs before its first byte hands the request to its
    fallback in about that long (a model that thinks long before streaming anything needs its own)."""

    connect: float = 10.0
    first_byte: float = 30.0
    idle: float = 300.0
    total: float = 1800.0


class RetryPolicy(Frozen):
    """`attempts` is the number of retries after the first try (so `retry 0` means one try)."""

    attempts: int = 2
    backoff_min: float = 0.5
    backoff_max: float = 8.0
    # not `timeout`: a hung upstream goes to the fallback after one `first_byte`, not after three
    on: tuple[RetryOn, ...] = ("429", "5xx", "529", "connect")


class BreakerPolicy(Frozen):
    """`breaker 5 failures cooldown 10s..2m`: open after `failures` consecutive health failures; stay open
    `cooldown` seconds, doubled after each failed probe up to `max_cooldown`. `breaker off`: never open."""

    enabled: bool = True
    failures: int = 5
    cooldown: float = 10.0
    max_cooldown: float = 120.0


class Provider(Frozen):
    name: str
    type: ProviderType
    url: Value
    key: SecretValue | None = None
    # `key env("…") or client`: while the key is unset, the client's own credentials go upstream (anthropic only)
    key_or_client: bool = False
    auth: AuthStyle
    headers: tuple[tuple[str, Value], ...] = ()  # a credential header's literal serialises redacted
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy | None = None  # None: the file-wide policy applies
    max_concurrency: int | None = None
    span: Span | None = None
    breaker: BreakerPolicy | None = None  # None: the file-wide policy applies

    @field_serializer("headers")
    def _show_headers(self, headers: tuple[tuple[str, Value], ...]) -> list[tuple[str, str]]:
        return [
            (name, show_secret(value) if is_credential_header(name, _literal(value)) else str(value.model_dump()))
            for name, value in headers
        ]


def _literal(value: Value) -> str | None:
    return value.value if isinstance(value, Literal_) else None


# --- models --------------------------------------------------------------------------------------------------------


class Price(Frozen):
    """What a model costs upstream, per billed class, exactly: US dollars per million tokens, and `web_search` in
    US dollars per 1,000 requests (the unit Anthropic quotes: $10 per 1,000 searches).

    No class is derived from another. A cache class left out (None) means the upstream does not bill it apart from
    plain input, and its tokens cost the `input` rate (docs/language.md#price); the compiler requires every class
    where the upstream does bill them apart (an `anthropic` provider, or `keep_cache_control` through OpenRouter).
    A `web_search` left out costs nothing: only Anthropic upstreams report searches, and there it is required.
    """

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_read: Decimal | None = None
    web_search: Decimal | None = None


# Upstream behaviours a model opts into, declared in the file instead of hard-coded per vendor:
#   replay_reasoning    send earlier thinking back as `reasoning_content` on assistant messages (DeepSeek thinking mode)
#   keep_cache_control  forward `cache_control` to an OpenAI-compatible upstream that honours it (Claude via OpenRouter)
#   google_search       answer the `web_search` server tool with Gemini's Google Search grounding
#   max_completion_tokens  send the output cap as `max_completion_tokens` (OpenAI's o-series and gpt-5 reject
#                          `max_tokens`)
#   prompt_cache_key    send the session as `prompt_cache_key` and a hashed user as `safety_identifier` instead of
#                       `user` (OpenAI's own Chat Completions API; not every compatible server takes them)
Quirk = Literal["replay_reasoning", "keep_cache_control", "google_search", "max_completion_tokens", "prompt_cache_key"]


class Deployment(Frozen):
    """One upstream serving a model alias: `provider/model weight N` on the right of `model NAME =`."""

    provider: str
    model: str
    weight: int = 1
    span: Span | None = None


# How a model with several deployments picks one per attempt, among those whose breaker lets requests through:
#   weighted    at random, in proportion to the weights
#   least-busy  the fewest requests in flight per unit of weight (ties: weighted at random)
Balance = Literal["weighted", "least-busy"]


class Model(Frozen):
    """A routable target: an alias declared with `model`, or a `provider/model` written directly in a rule.

    `name` is the alias, or `provider/model` for targets written literally. `force` sets request parameters on every
    call (after translation, in the upstream's own wire format), `drop` removes them.

    `provider`/`model` name the first (or only) deployment. `deployments` lists every deployment, that first one
    included, when there are several; it is empty for a model with one. Every option of the alias (context,
    max_output, force, drop, quirks) applies to each deployment.
    """

    name: str
    provider: str
    model: str
    declared: bool = True
    context: int | None = None
    max_output: int | None = None
    price: Price | None = None
    force: tuple[tuple[str, Any], ...] = ()
    drop: tuple[str, ...] = ()
    quirks: tuple[Quirk, ...] = ()
    span: Span | None = None
    deployments: tuple[Deployment, ...] = ()
    balance: Balance = "weighted"
    # `hedge after N`: seconds without an answer (for a stream: its first event) before the next model of the chain
    # being walked is asked too; the first to answer is relayed, the other cancelled
    hedge: float | None = None


# --- conditions ----------------------------------------------------------------------------------------------------

Comparison = Literal["==", "!=", ">", ">=", "<", "<="]
EffortLevel = Literal["low", "medium", "high", "xhigh", "max"]
EFFORT_ORDER: tuple[EffortLevel, ...] = ("low", "medium", "high", "xhigh", "max")


class Default(Frozen):
    """Always true; the `default` rule."""

    kind: Literal["default"] = "default"


class Direct(Frozen):
    """The request's model is a declared alias or `provider/model` (what `/model` in Claude Code sends),
    or the system prompt carries a `<CCM-SUBAGENT-MODEL>` tag; the target comes from the request."""

    kind: Literal["direct"] = "direct"


class Background(Frozen):
    """The requested model name matches one of the table's background globs (`*haiku*` unless set)."""

    kind: Literal["background"] = "background"


class Thinking(Frozen):
    """Thinking is requested: `thinking.type` is `enabled` or `adaptive`."""

    kind: Literal["thinking"] = "thinking"


class Effort(Frozen):
    """`output_config.effort`, or for older clients the level bucketed from `thinking.budget_tokens`."""

    kind: Literal["effort"] = "effort"
    op: Comparison
    level: EffortLevel


class Tokens(Frozen):
    """The request's input token count (counted locally, only when evaluation reaches this condition)."""

    kind: Literal["tokens"] = "tokens"
    op: Comparison
    value: int


class WebSearch(Frozen):
    kind: Literal["websearch"] = "websearch"


class Image(Frozen):
    """An image block anywhere in the messages, including inside `tool_result` content."""

    kind: Literal["image"] = "image"


class Subagent(Frozen):
    """`cc_is_subagent=true` in the first system block, or a `<CCM-SUBAGENT-MODEL>` tag in the system prompt."""

    kind: Literal["subagent"] = "subagent"


class ModelName(Frozen):
    """The requested model name matches `glob` (fnmatch-style; a glob without wildcards is an exact match)."""

    kind: Literal["model"] = "model"
    glob: str


class Header(Frozen):
    """A request header (name case-insensitive) is present, or matches `glob` when one is given."""

    kind: Literal["header"] = "header"
    name: str
    glob: str | None = None


class Tool(Frozen):
    """A tool whose name matches `glob` is offered in `tools`."""

    kind: Literal["tool"] = "tool"
    glob: str


class CallerName(Frozen):
    """The caller's issued key (`key`), or the plan or team it belongs to, matches `glob`; false for a request
    without an issued key."""

    kind: Literal["caller"] = "caller"
    field: Literal["key", "plan", "team"]
    glob: str


class Budget(Frozen):
    """What is left of the caller's budget for its period (else of its credit), in percent of it: `budget < 20%`.
    False for a caller with neither."""

    kind: Literal["budget"] = "budget"
    op: Comparison
    percent: Decimal


SpendPeriod = Literal["today", "week", "month"]


class Spent(Frozen):
    """What the caller's key was charged in this UTC day, week (from Monday) or month: `spent today > $5`."""

    kind: Literal["spent"] = "spent"
    period: SpendPeriod
    op: Comparison
    usd: Decimal


class Not(Frozen):
    kind: Literal["not"] = "not"
    operand: Condition


class All(Frozen):
    kind: Literal["and"] = "and"
    operands: tuple[Condition, ...]


class AnyOf(Frozen):
    kind: Literal["or"] = "or"
    operands: tuple[Condition, ...]


Condition = Annotated[
    Default | Direct | Background | Thinking | Effort | Tokens | WebSearch | Image | Subagent | ModelName | Header
    | Tool | CallerName | Budget | Spent | Not | All | AnyOf,
    Field(discriminator="kind"),
]
Not.model_rebuild()
All.model_rebuild()
AnyOf.model_rebuild()


class Rule(Frozen):
    """`condition -> target`. `target` names a key of `RoutingTable.models`; it is None only for `direct`,
    whose target comes from the request. `source` is the rule as written, for `explain` and logs."""

    condition: Condition
    target: str | None
    source: str
    span: Span | None = None


# --- in-file tests -------------------------------------------------------------------------------------------------


class Standing(Frozen):
    """Who a request comes from, as the rules read it (`key`, `plan`, `team`, `budget`, `spent` conditions):
    its issued key, the plan and team it belongs to, what is left of its budget in percent (None: no budget or
    credit) and what it was charged this day, week and month."""

    key: str | None = None
    plan: str | None = None
    team: str | None = None
    budget_left: Decimal | None = None
    spent: tuple[tuple[SpendPeriod, Decimal], ...] = ()


BudgetPeriod = Literal["day", "week", "month"]


class Policy(Frozen):
    """`plan NAME { … }` or `team NAME { … }`: what a key that belongs to it may use, unless the key says itself:
    the model aliases it may use (empty: all), the markup on its costs, and each key's own budget (USD per UTC
    `period`) and rate limits. The budget and limits apply to every key of the plan or team on its own: they are
    never a pool the keys share."""

    kind: Literal["plan", "team"]
    name: str
    models: tuple[str, ...] = ()
    markup: Decimal | None = None
    budget: Decimal | None = None  # USD, exact; always with its period
    period: BudgetPeriod | None = None
    rpm: int | None = None
    tpm: int | None = None
    span: Span | None = None


class RouteTest(Frozen):
    """A named routing case from the file: a request (inline or loaded from a captured JSON at compile time),
    optional headers and a token count standing in for the real count, and the expected target's name."""

    name: str
    request: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    tokens: int | None = None
    caller: Standing | None = None  # who the test's request comes from (an issued key, its plan, its spend)
    expect: str
    span: Span | None = None


# --- the table -----------------------------------------------------------------------------------------------------


class Settings(Frozen):
    """File-wide settings. `auth` lists the keys clients must present (none: ccm listens on loopback only).
    `count_tokens` names an anthropic provider to forward count_tokens to; None counts locally. `markup` is the
    percent added to upstream costs (`markup 20%`), unless a key has its own."""

    auth: tuple[SecretValue, ...] = ()
    background: tuple[str, ...] = ("*haiku*",)
    count_tokens: str | None = None
    body_limit: int = 32 * 1024 * 1024
    markup: Decimal = Decimal(0)
    # what a request does when the usage ledger cannot be reached: refused (503) or served and journaled
    ledger_failure: Literal["closed", "open"] = "closed"


class RoutingTable(Frozen):
    version: str  # a short hash of the sources: logged, shown by /health, changes on every reload
    sources: tuple[str, ...]
    settings: Settings = Settings()
    providers: dict[str, Provider]
    models: dict[str, Model]
    rules: tuple[Rule, ...]
    fallbacks: dict[str, tuple[str, ...]] = {}
    retry: RetryPolicy = RetryPolicy()
    tests: tuple[RouteTest, ...] = ()
    breaker: BreakerPolicy = BreakerPolicy()
    plans: dict[str, Policy] = {}
    teams: dict[str, Policy] = {}
    # What `ccm.route` derives once per table (compiled matchers, resolved chains). Not part of the contract.
    _router: Any = PrivateAttr(default=None)

    def retry_for(self, provider: str) -> RetryPolicy:
        return self.providers[provider].retry or self.retry

    def breaker_for(self, provider: str) -> BreakerPolicy:
        return self.providers[provider].breaker or self.breaker

    def reads_spend(self) -> bool:
        """Whether any rule reads what a caller spent or has left (routing then asks the ledger first)."""
        return any(_reads(rule.condition, (Budget, Spent)) for rule in self.rules)

    def policies_of(self, plan: str | None, team: str | None) -> tuple[Policy, ...]:
        """The policies a key of `plan` and `team` falls under, the plan's first."""
        if plan is None and team is None:  # the local caller, and most keys
            return ()
        found = (self.plans.get(plan) if plan else None, self.teams.get(team) if team else None)
        return tuple(p for p in found if p is not None)

    def needs_token_count(self) -> bool:
        """Whether any rule reads the token count (a request is then tokenized only when evaluation reaches it)."""
        return any(_reads(rule.condition, (Tokens,)) for rule in self.rules)


def _reads(condition: Condition, kinds: tuple[type[Frozen], ...]) -> bool:
    if isinstance(condition, kinds):
        return True
    if isinstance(condition, Not):
        return _reads(condition.operand, kinds)
    if isinstance(condition, (All, AnyOf)):
        return any(_reads(c, kinds) for c in condition.operands)
    return False
