"""The runtime: everything the server derives from one routing table, built once per table.

    Runtime            the table plus, per provider, its resolved endpoint, pooled client, adapter, limiter and
                       deployment states (breakers, in-flight counts); the resolved inbound keys; the redactor of
                       every secret it resolved; /health's fixed part and the pre-rendered /v1/models bodies
    Target             one deployment of a model, ready to call: provider runtime, the model as its adapter sees
                       it, weight, retry policy, live state; `Runtime.targets_of(model)` builds a model's once
    build_runtime      table + environment (+ the previous runtime) -> (runtime, providers to close)
    RuntimeHolder      the one reference the app reads per request; a reload swaps it atomically

Requests snapshot `holder.current` once and use that runtime to the end, so a swap never changes a request midway.
`build_runtime` reuses the client, adapter, limiter and deployment states of every provider whose declared settings,
effective breaker policy and resolved endpoint are unchanged (so a reload keeps warm connections, open breakers and
in-flight counts) and returns the providers it did not reuse; the caller closes them with `close_providers` once
the requests still using the old runtime are done.

Adapter modules are imported lazily, only for the wire types the table uses.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import field
from typing import Any

import anyio
import orjson

from ccm.core.deployments import DeploymentState, ProviderDeployments, deployments_of
from ccm.frozen import frozen
from ccm.providers.base import Adapter
from ccm.table import (
    All,
    AnyOf,
    Condition,
    Deployment,
    Model,
    Not,
    Provider,
    RetryPolicy,
    RoutingTable,
    Tokens,
    resolve,
)
from ccm.upstream.client import Endpoint, PooledClient, make_client, resolve_endpoint
from ccm.upstream.errors import Redactor

log = logging.getLogger("ccm.core")

# wire type -> "module:class"; every adapter is constructed as Adapter(provider, endpoint, client).
ADAPTERS: dict[str, str] = {
    "anthropic": "ccm.providers.anthropic.adapter:AnthropicAdapter",
    "openai": "ccm.providers.openai.adapter:OpenAIAdapter",
    "gemini": "ccm.providers.gemini.adapter:GeminiAdapter",
    "openai-responses": "ccm.providers.responses.adapter:ResponsesAdapter",
}

ClientFactory = Callable[[Provider], PooledClient]


@frozen
class ProviderRuntime:
    provider: Provider
    endpoint: Endpoint
    client: PooledClient
    adapter: Adapter
    limiter: anyio.CapacityLimiter | None  # bounds in-flight requests when the provider sets max_concurrency
    # kept with the rest of this runtime when a reload leaves the provider unchanged, so its state survives reloads
    deployments: ProviderDeployments = field(default_factory=ProviderDeployments)


@frozen(eq=False)
class Target:
    """One deployment of a model. `model` is what the adapter is called with: the alias (its name, limits and
    options) with this deployment's provider and upstream model. `label` is `provider/model`, for logs and the
    `x-ccm-deployment` header."""

    provider: ProviderRuntime
    model: Model
    weight: int
    policy: RetryPolicy
    state: DeploymentState
    label: str
    who: str  # `provider=P model=ALIAS`, plus `deployment=P/M` when the model has several: how log lines name it

    @property
    def has_room(self) -> bool:
        limiter = self.provider.limiter
        return limiter is None or limiter.available_tokens > 0


@frozen
class Runtime:
    table: RoutingTable
    providers: Mapping[str, ProviderRuntime]
    auth_required: bool
    auth_keys: tuple[bytes, ...]  # the inbound keys that resolved; empty with auth_required means nobody gets in
    health: Mapping[str, Any]  # /health's fields that only change with the table (the app adds the live ones)
    models_body: bytes
    model_bodies: Mapping[str, bytes]  # alias -> its /v1/models/{id} object
    targets: dict[str, tuple[Target, ...]] = field(default_factory=dict)  # model name -> deployments to call
    # Requests on this table are counted when a `tokens` rule is reached or a model declares a context: every such
    # decision is the same for any count below `count_floor` (0: a `tokens ==`/`!=` rule, every count matters).
    # None: /v1/messages never counts.
    count_floor: int | None = None
    redactor: Redactor = field(default_factory=lambda: Redactor(()))  # every secret this runtime resolved

    def targets_of(self, model: Model) -> tuple[Target, ...]:
        """The model's targets, cached for the table's own models (a one-off direct pick is built each time: a
        client must not be able to grow the cache)."""
        cached = self.targets.get(model.name)
        if cached is not None:
            return cached
        built = tuple(_target(self, model, deployment) for deployment in deployments_of(model))
        if self.table.models.get(model.name) is model:
            self.targets[model.name] = built
        return built

    @property
    def unconfigured(self) -> list[ProviderRuntime]:
        """Providers that cannot be used until a variable is set (each request to them gets a clear error)."""
        return [p for p in self.providers.values() if p.endpoint.missing]


class RuntimeHolder:
    """The current runtime. Reading `current` is one attribute load; `swap` replaces it and returns the old one."""

    __slots__ = ("current",)

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime

    def swap(self, runtime: Runtime) -> Runtime:
        previous, self.current = self.current, runtime
        return previous


def _same_settings(old: Provider, new: Provider) -> bool:
    """Equal but for where they were written: an edit that only moves a provider's lines keeps its pool and breaker."""
    return old.model_copy(update={"span": None}) == new.model_copy(update={"span": None})


def build_runtime(
    table: RoutingTable,
    environ: Mapping[str, str],
    previous: Runtime | None = None,
    client_factory: ClientFactory = make_client,
) -> tuple[Runtime, list[ProviderRuntime]]:
    providers: dict[str, ProviderRuntime] = {}
    routed = _upstream_models(table)
    for name, provider in table.providers.items():
        endpoint = resolve_endpoint(provider, environ)
        policy = table.breaker_for(name)
        old = previous.providers.get(name) if previous is not None else None
        if (old is not None and _same_settings(old.provider, provider) and old.endpoint == endpoint
                and old.deployments.policy == policy):
            old.deployments.keep(routed.get(name, ()))
            providers[name] = old
            continue
        client = client_factory(provider)
        adapter = _adapter_class(provider.type)(provider, endpoint, client)
        limiter = anyio.CapacityLimiter(provider.max_concurrency) if provider.max_concurrency else None
        states = ProviderDeployments(policy, routed.get(name, ()))
        providers[name] = ProviderRuntime(provider, endpoint, client, adapter, limiter, states)

    retired = []
    if previous is not None:
        kept = {id(p) for p in providers.values()}
        retired = [p for p in previous.providers.values() if id(p) not in kept]

    keys = _inbound_keys(table, environ)
    declared = {name: m for name, m in table.models.items() if m.declared}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    model_objects = {name: _model_object(model, created) for name, model in declared.items()}
    runtime = Runtime(
        table=table,
        providers=providers,
        auth_required=bool(table.settings.auth),
        auth_keys=keys,
        health=_health(table, providers),
        models_body=orjson.dumps(
            {
                "data": list(model_objects.values()),
                "has_more": False,
                "first_id": next(iter(declared), None),
                "last_id": next(reversed(declared), None) if declared else None,
            }
        ),
        model_bodies={name: orjson.dumps(obj) for name, obj in model_objects.items()},
        count_floor=count_floor(table),
        redactor=Redactor([*(key.decode() for key in keys), *_provider_secrets(providers.values())]),
    )
    return runtime, retired


def count_floor(table: RoutingTable) -> int | None:
    """See `Runtime.count_floor`. `tokens > N` and `tokens >= N` are false, `tokens < N` and `tokens <= N` true,
    and a request fits every declared context, for any count below the smallest N and context."""
    thresholds = [model.context for model in table.models.values() if model.context is not None]
    pending: list[Condition] = [rule.condition for rule in table.rules]
    while pending:
        condition = pending.pop()
        if isinstance(condition, Tokens):
            thresholds.append(condition.value if condition.op not in ("==", "!=") else 0)
        elif isinstance(condition, Not):
            pending.append(condition.operand)
        elif isinstance(condition, All | AnyOf):
            pending.extend(condition.operands)
    return min(thresholds) if thresholds else None


async def close_providers(providers: list[ProviderRuntime]) -> None:
    """Close adapters and their pooled clients (after the requests that used them have finished)."""
    for p in providers:
        try:
            await p.adapter.aclose()
            await p.client.aclose()
        except Exception:  # noqa: BLE001 - closing is best effort; one failure must not keep others open
            log.exception("closing provider %s failed", p.provider.name)


def _adapter_class(provider_type: str) -> Callable[[Provider, Endpoint, PooledClient], Adapter]:
    module, _, attribute = ADAPTERS[provider_type].partition(":")
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


def _upstream_models(table: RoutingTable) -> dict[str, list[str]]:
    """Provider name -> the upstream models the table's models deploy on it."""
    routed: dict[str, list[str]] = {}
    for model in table.models.values():
        for deployment in deployments_of(model):
            models = routed.setdefault(deployment.provider, [])
            if deployment.model not in models:
                models.append(deployment.model)
    return routed


def _provider_secrets(providers: Iterable[ProviderRuntime]) -> list[str]:
    """What every provider sends upstream as its own: key and header values (a credential may hide in a header)."""
    secrets: list[str] = []
    for p in providers:
        for _, value in p.endpoint.headers:
            secrets.append(value)
            secrets.append(value.removeprefix("Bearer "))
    return secrets


def _inbound_keys(table: RoutingTable, environ: Mapping[str, str]) -> tuple[bytes, ...]:
    resolved = (resolve(value, environ) for value in table.settings.auth)
    return tuple(key.encode() for key in resolved if key)


def _model_object(model: Model, created: str) -> dict[str, str | int]:
    """Anthropic's model object, with the window and output cap the table declares (`max_input_tokens`,
    `max_tokens`, as Anthropic's own model catalogue names them) for clients that read them."""
    listed: dict[str, str | int] = {"type": "model", "id": model.name, "display_name": model.name,
                                    "created_at": created}
    if model.context is not None:
        listed["max_input_tokens"] = model.context
    if model.max_output is not None:
        listed["max_tokens"] = model.max_output
    return listed


def _health(table: RoutingTable, providers: Mapping[str, ProviderRuntime]) -> dict[str, Any]:
    """/health's part that only changes with the table: `degraded`, with the reasons, when a provider that a rule
    or fallback chain reaches cannot be used until a variable is set."""
    reached = _reached_providers(table)
    reasons = [f"provider {name} is not configured: {p.endpoint.missing}"
               for name, p in providers.items() if p.endpoint.missing and name in reached]
    health: dict[str, Any] = {
        "status": "degraded" if reasons else "ok",
        "version": table.version,
        "providers": {
            name: {"type": p.provider.type, "configured": p.endpoint.missing is None} for name, p in providers.items()
        },
    }
    if reasons:
        health["reasons"] = reasons
    return health


def _reached_providers(table: RoutingTable) -> set[str]:
    """The providers serving a model that a rule routes to, or that such a model falls back to."""
    pending = [rule.target for rule in table.rules if rule.target is not None]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name not in table.models:
            continue
        seen.add(name)
        pending.extend(table.fallbacks.get(name, ()))
    return {deployment.provider for name in seen for deployment in deployments_of(table.models[name])}


def target_name(model: Model) -> str:
    """`provider/model`: how logs and headers name the upstream model that served."""
    return f"{model.provider}/{model.model}"


def _target(runtime: Runtime, model: Model, deployment: Deployment) -> Target:
    """One deployment of `model`, ready to call."""
    provider = runtime.providers[deployment.provider]
    view = model
    if (deployment.provider, deployment.model) != (model.provider, model.model):
        view = model.model_copy(update={"provider": deployment.provider, "model": deployment.model})
    label = f"{deployment.provider}/{deployment.model}"
    who = f"provider={deployment.provider} model={model.name}"
    return Target(
        provider,
        view,
        deployment.weight,
        runtime.table.retry_for(deployment.provider),
        provider.deployments.state(deployment.model),
        label,
        f"{who} deployment={label}" if model.deployments else who,
    )
