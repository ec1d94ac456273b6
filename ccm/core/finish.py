"""The one place a finished request is known.

Every request the app answers ends in exactly one `RequestRecord`, handed to each `on_finished` subscriber in
order. The request log line is the first subscriber; metering and metrics subscribe the same way. A record is built
from names and numbers only (rule, model names, statuses, token counts): never headers, bodies or keys.

Subscribers run on the request's task after the response is complete, so they must be quick and must not raise;
one that raises is logged and skipped, and the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ccm.providers.base import Usage

log = logging.getLogger("ccm.request")
_internal = logging.getLogger("ccm.core")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream attempt: who was tried, what came back, how long it took to the first byte (or the failure)."""

    provider: str
    model: str  # the table model's name (alias, or provider/model)
    status: int
    reason: str | None  # the failure reason (`429`, `5xx`, `timeout`, …); None when it succeeded
    latency_ms: float


@dataclass(slots=True)
class RequestRecord:
    time: float  # wall-clock start, seconds since the epoch
    method: str
    path: str
    status: int
    latency_ms: float
    rule: str | None = None  # the matching rule as written, for /v1/messages
    rule_index: int | None = None
    target: str | None = None  # `provider/model` of the upstream model that served (or was tried first)
    model: str | None = None  # the table model's name that served
    attempts: tuple[Attempt, ...] = ()
    usage: Usage | None = None
    stream: bool = False
    client_disconnected: bool = False
    error: str | None = None  # the error type the client got, when status >= 400 or the stream ended in an error


Subscriber = Callable[[RequestRecord], None]


@dataclass(slots=True)
class Finisher:
    subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def finish(self, record: RequestRecord) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber(record)
            except Exception:  # noqa: BLE001 - a broken subscriber must not take requests down with it
                _internal.exception("on_finished subscriber %r failed", subscriber)


def log_request(record: RequestRecord) -> None:
    """The request log line: one per request, formatted only when INFO is enabled."""
    if not log.isEnabledFor(logging.INFO):
        return
    parts = [record.method, record.path]
    if record.rule is not None:
        parts.append(f"rule={record.rule_index}:{record.rule!r}")
    if record.target is not None:
        parts.append(f"target={record.target}")
    parts.append(f"status={record.status}")
    if record.attempts:
        parts.append(f"attempts={len(record.attempts)}")
    parts.append(f"latency={record.latency_ms:.0f}ms")
    if record.usage is not None:
        parts.append(f"tokens={record.usage.input_tokens}/{record.usage.output_tokens}")
        if record.usage.cache_read_input_tokens:
            parts.append(f"cache_read={record.usage.cache_read_input_tokens}")
    if record.stream:
        parts.append("stream")
    if record.error:
        parts.append(f"error={record.error}")
    if record.client_disconnected:
        parts.append("client_disconnected")
    log.info(" ".join(parts))
