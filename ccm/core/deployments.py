"""Deployments: the upstreams serving one model alias, their live state, and the choice of one per attempt.

    DeploymentState       one deployment's circuit breaker and the requests in flight on it
    ProviderDeployments   a provider's deployment states, one per upstream model the table routes to it; lives on
                          the provider's runtime, so it survives every reload that keeps the provider
    Target                one deployment of a model, ready to call: provider runtime, the model as its adapter sees
                          it, weight, retry policy, live state
    targets(runtime, m)   a model's targets, built once per table (a model with one deployment has one target)
    choose(...)           the target for the next attempt

A deployment is a provider and an upstream model, so two aliases naming the same `provider/model` share its breaker
and its in-flight count. An upstream model the table does not name (a direct `provider/anything` pick) uses one
state shared by all such picks on that provider, so what a client sends cannot grow the registry.

How `choose` picks, among the targets whose breaker lets a request through:
    1. those with a free slot under their provider's `concurrency` limit, if any has one (a full provider spills
       its requests to the other deployments; when all are full, the request queues for the chosen one)
    2. `weighted`: at random, in proportion to the weights (the random source is injected, for tests)
       `least-busy`: the fewest requests in flight per unit of weight; ties are broken as `weighted`
With one target there is nothing to choose: the dispatcher does not call `choose` at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ccm.core.breaker import Breaker
from ccm.table import Balance, BreakerPolicy, Deployment, Model, RetryPolicy

if TYPE_CHECKING:
    from ccm.core.runtime import ProviderRuntime, Runtime

RandomSource = Callable[[], float]

OTHER_MODELS = "*"  # how /health names the state shared by upstream models the table does not name


class DeploymentState:
    __slots__ = ("breaker", "in_flight")

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.in_flight = 0  # attempts started and not yet closed (waiting for a slot, waiting for the answer, relaying)

    def snapshot(self) -> dict[str, Any]:
        return {**self.breaker.snapshot(), "in_flight": self.in_flight}


_SEVERITY = {"open": 3, "half_open": 2, "closed": 1, "off": 0}


class ProviderDeployments:
    """A provider's deployment states, keyed by upstream model id."""

    __slots__ = ("policy", "clock", "_states", "_other")

    def __init__(
        self,
        policy: BreakerPolicy = BreakerPolicy(),
        models: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._states = {model: self._new() for model in models}
        self._other: DeploymentState | None = None

    def state(self, model: str) -> DeploymentState:
        found = self._states.get(model)
        if found is not None:
            return found
        if self._other is None:
            self._other = self._new()
        return self._other

    def keep(self, models: Iterable[str]) -> None:
        """After a reload that keeps this provider: one state per upstream model the new table routes here, the
        existing ones carried over. A request still using a dropped state finishes with it undisturbed."""
        self._states = {model: self._states.get(model) or self._new() for model in models}

    def snapshot(self) -> dict[str, Any]:
        """For `GET /health`: the provider's worst deployment at the top (so a provider with one upstream model
        reads as before), the requests in flight on all of them, and each one under `models`."""
        states = dict(self._states)
        if self._other is not None:
            states[OTHER_MODELS] = self._other
        models = {name: state.snapshot() for name, state in states.items()}
        worst = max(models.values(), key=lambda v: (_SEVERITY[v["state"]], v["consecutive_failures"]), default=None)
        top = dict(worst) if worst is not None else self._new().snapshot()
        top["in_flight"] = sum(state.in_flight for state in states.values())
        top["models"] = models
        return top

    def _new(self) -> DeploymentState:
        return DeploymentState(Breaker.from_policy(self.policy, self.clock))


@dataclass(frozen=True, slots=True, eq=False)
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


def deployments_of(model: Model) -> tuple[Deployment, ...]:
    return model.deployments or (Deployment(provider=model.provider, model=model.model),)


def targets(runtime: Runtime, model: Model) -> tuple[Target, ...]:
    """The model's targets, cached on the runtime for the table's own models (a one-off direct pick is built
    each time: a client must not be able to grow the cache)."""
    cached = runtime.targets.get(model.name)
    if cached is not None:
        return cached
    built = tuple(_target(runtime, model, deployment) for deployment in deployments_of(model))
    if runtime.table.models.get(model.name) is model:
        runtime.targets[model.name] = built
    return built


def _target(runtime: Runtime, model: Model, deployment: Deployment) -> Target:
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


def choose(
    candidates: Sequence[Target], balance: Balance, rand: RandomSource, avoid: Sequence[Target] = ()
) -> Target | None:
    """The target for the next attempt among `candidates` not in `avoid`; None when no breaker lets one through."""
    usable = [t for t in candidates if t.state.breaker.available and t not in avoid]
    if not usable:
        return None
    pool = [t for t in usable if t.has_room] or usable
    if balance == "least-busy" and len(pool) > 1:
        least = min(t.state.in_flight / t.weight for t in pool)
        pool = [t for t in pool if t.state.in_flight / t.weight == least]
    return _weighted(pool, rand)


def _weighted(pool: Sequence[Target], rand: RandomSource) -> Target:
    if len(pool) == 1:
        return pool[0]
    point = rand() * sum(t.weight for t in pool)
    for target in pool:
        point -= target.weight
        if point < 0:
            return target
    return pool[-1]  # rand() is below 1, but float sums round
