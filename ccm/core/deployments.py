"""Deployments: the upstreams serving one model alias, and their live state.

    DeploymentState       one deployment's circuit breaker and the requests in flight on it
    ProviderDeployments   a provider's deployment states, one per upstream model the table routes to it; lives on
                          the provider's runtime, so it survives every reload that keeps the provider
    deployments_of(m)     a model's deployments (a model with one has one)

A deployment ready to call is a `ccm.core.runtime.Target`; which one an attempt takes is `ccm.core.dispatch.choose`.

A deployment is a provider and an upstream model, so two aliases naming the same `provider/model` share its breaker
and its in-flight count. An upstream model the table does not name (a direct `provider/anything` pick) uses one
state shared by all such picks on that provider, so what a client sends cannot grow the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ccm.core.breaker import Breaker
from ccm.table import BreakerPolicy, Deployment, Model

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


def deployments_of(model: Model) -> tuple[Deployment, ...]:
    return model.deployments or (Deployment(provider=model.provider, model=model.model),)


