"""The admin page's "test provider": one real call of at most one output token through the provider's own adapter,
with the key and client of the runtime being served.

    await test_provider(runtime, name, upstream_model=None) -> ProbeResult

The request is a Messages body (`max_tokens: 1`, one short user message) sent as a model of the table would send it:
the first model the table routes to this provider lends its options (quirks, force, drop), with this provider and
upstream model. Nothing goes through dispatch, so the call is not retried, not counted against breakers and not
recorded as a request. What comes back is the status, the latency, the model the upstream says answered, and the
error if any — every text passed through the runtime's redactor (an upstream that echoes a header cannot show the
key here either).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import orjson

from ccm.core.runtime import Runtime
from ccm.errors import UpstreamError
from ccm.frozen import frozen
from ccm.providers.base import Call
from ccm.table import Model
from ccm.upstream.errors import located

PROBE_SECONDS = 30.0
PROBE_PROMPT = "Reply with the single word: ok"


@frozen
class ProbeResult:
    provider: str
    upstream_model: str
    ok: bool
    status: int | None
    latency_ms: float
    answered_by: str | None = None  # the `model` of the upstream's answer
    error: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "upstream_model": self.upstream_model, "ok": self.ok, "status": self.status,
            "latency_ms": round(self.latency_ms, 1), "answered_by": self.answered_by, "error": self.error,
            "reason": self.reason,
        }


def probe_model(runtime: Runtime, name: str, upstream_model: str | None) -> Model:
    """The model the probe is sent as: a table model served by `name` (for its options), on this provider."""
    table = runtime.table
    lender: Model | None = None
    for model in table.models.values():
        deployments = [(d.provider, d.model) for d in model.deployments] or [(model.provider, model.model)]
        for provider, upstream in deployments:
            if provider == name and (upstream_model is None or upstream == upstream_model):
                lender = model.model_copy(update={"provider": name, "model": upstream, "deployments": ()})
                break
        if lender is not None:
            break
    if lender is None:
        lender = Model(name=f"{name}/{upstream_model or ''}", provider=name, model=upstream_model or "", declared=False)
    return lender


async def test_provider(runtime: Runtime, name: str, upstream_model: str | None = None) -> ProbeResult:
    provider = runtime.providers.get(name)
    if provider is None:
        return ProbeResult(name, upstream_model or "", False, None, 0.0, error=f"there is no provider `{name}`")
    model = probe_model(runtime, name, upstream_model or None)
    if not model.model:
        return ProbeResult(name, "", False, None, 0.0,
                           error="no model of the table uses this provider: name an upstream model to test")
    if provider.endpoint.missing:
        return ProbeResult(name, model.model, False, None, 0.0, reason="config",
                           error=f"not configured: {provider.endpoint.missing}")
    body = {"model": model.name, "max_tokens": 1, "messages": [{"role": "user", "content": PROBE_PROMPT}]}
    call = Call(body=body, raw=None, headers={}, stream=False, model=model)
    redact = runtime.redactor.redact
    started = time.perf_counter()
    try:
        with anyio.fail_after(min(PROBE_SECONDS, provider.endpoint.timeouts.total)):
            reply = await provider.adapter.send(call)
            try:
                answer = reply.body or b""
            finally:
                await reply.aclose()
    except TimeoutError:
        took = (time.perf_counter() - started) * 1000
        return ProbeResult(name, model.model, False, None, took, reason="timeout",
                           error=f"no answer within {min(PROBE_SECONDS, provider.endpoint.timeouts.total):g} s")
    except Exception as exc:  # noqa: BLE001 - every failure is shown, through the one boundary
        took = (time.perf_counter() - started) * 1000
        error = located(exc, name, runtime.redactor)
        status = error.status if isinstance(error, UpstreamError) else None
        return ProbeResult(name, model.model, False, status, took, reason=error.reason, error=redact(error.message))
    took = (time.perf_counter() - started) * 1000
    answered_by: str | None = None
    try:
        parsed = orjson.loads(answer)
        if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
            answered_by = redact(parsed["model"])
    except orjson.JSONDecodeError:
        pass
    ok = 200 <= reply.status < 300
    return ProbeResult(name, model.model, ok, reply.status, took, answered_by,
                       None if ok else redact(answer.decode("utf-8", "replace")[:300]))
