"""The one record of a finished request, and the subscribers that read it.

Every request the app answers ends in exactly one `RequestRecord`, built once when the request is over (from what
the exchange saw, the routing decision, the dispatch outcome and the relay's result) and never changed after. It
holds names and numbers only — rule, model names, statuses, token counts, the price that applied — never headers,
bodies or keys, so any subscriber may keep or show it.

    Records.publish(record)        hands a record to every subscriber
    Records.subscribe(fn)          a subscriber, called on the request's task: it must be quick (the log line, the
                                   metrics' accumulators, the recent records); one that needs I/O keeps its own
                                   buffer and writer, as request capture and the ledger's journal do

A subscriber that raises is logged and skipped; the server keeps serving.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any, Literal

import anyio

from ccm.frozen import frozen
from ccm.table import Price
from ccm.usage import TokenUsage

log = logging.getLogger("ccm.request")
_internal = logging.getLogger("ccm.core")

RECENT_CAPACITY = 500


@frozen
class Caller:
    """Who sent a request. `local`: nobody in particular (no inbound key is required, the loopback set-up);
    `inbound`: a key from the route file's `auth`; `key`: an issued key (its id and name)."""

    kind: Literal["local", "inbound", "key"]
    key_id: str | None = None
    name: str | None = None
    plan: str | None = None
    team: str | None = None
    # metering's own record of the key (a `ccm.ledger.records.KeyInfo`): opaque to the core, never shown
    handle: Any = field(default=None, compare=False, repr=False)


LOCAL = Caller("local")
INBOUND = Caller("inbound")


@frozen
class Attempt:
    """One upstream attempt: which deployment was asked, with which upstream model, what came back, how long it
    took to the first byte (or the failure), and the usage it reported when it is the one that answered."""

    provider: str
    model: str  # the table model's name (alias, or provider/model)
    upstream_model: str  # the model id sent upstream
    status: int
    reason: str | None  # the failure reason (`429`, `5xx`, `timeout`, …); None when it answered
    latency_ms: float
    resent: bool = False  # the POST went out twice: a stale keep-alive connection closed before any answer
    usage: TokenUsage | None = None

    def answered(self, usage: TokenUsage) -> Attempt:
        """This attempt with the usage its answer reported (built field by field: `dataclasses.replace` reads every
        field by name, ~4 µs on each request's path)."""
        return Attempt(self.provider, self.model, self.upstream_model, self.status, self.reason, self.latency_ms,
                       self.resent, usage)


Outcome = Literal["ok", "error", "truncated", "client_closed"]


@frozen
class RequestRecord:
    request_id: str  # the `request-id` the client got
    started_at: float  # wall clock, seconds since the epoch
    method: str
    path: str
    status: int  # the HTTP status sent (499 when the client left before any answer)
    latency_ms: float
    caller: Caller = LOCAL
    table_version: str = ""
    session_id: str | None = None  # Claude Code's session, from `metadata.user_id`
    requested_model: str | None = None  # the model the client asked for
    rule: str | None = None  # the matching rule as written, for /v1/messages
    rule_index: int | None = None
    model: str | None = None  # the table model's name that served (or was tried first)
    target: str | None = None  # `provider/model` of the upstream model that served (or was tried first)
    price: Price | None = None  # the serving model's price when the request was routed: a reload cannot change it
    attempts: tuple[Attempt, ...] = ()
    usage: TokenUsage | None = None  # the answering attempt's final usage (partial when the stream was cut)
    usage_estimated: bool = False  # no upstream usage: the counts are ccm's own estimate
    stream: bool = False
    ttfb_ms: float | None = None  # until the first byte of the answer went to the client
    error: str | None = None  # the error type the client got, when status >= 400 or a stream ended in an error
    truncated: bool = False  # the upstream's answer ended before its protocol's end
    client_disconnected: bool = False
    outcome: Outcome = field(default="ok")


Subscriber = Callable[[RequestRecord], None]


class Records:
    def __init__(self, subscribers: tuple[Subscriber, ...] = ()) -> None:
        self._subscribers = list(subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, record: RequestRecord) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(record)
            except Exception:  # noqa: BLE001 - a broken subscriber must not take requests down with it
                _internal.exception("record subscriber %r failed", subscriber)


class RecentRecords:
    """The last `capacity` records, newest last: what the admin page's live feed and `ccm status` read. A quick
    subscriber (one append to a bounded deque)."""

    def __init__(self, capacity: int = RECENT_CAPACITY) -> None:
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=capacity)
        self._changed: list[anyio.Event] = []

    def __call__(self, record: RequestRecord) -> None:
        self._records.append(record)
        if self._changed:
            for event in self._changed:
                event.set()
            self._changed.clear()

    def snapshot(self, session_id: str | None = None) -> list[RequestRecord]:
        if session_id is None:
            return list(self._records)
        return [r for r in self._records if r.session_id == session_id]

    async def wait(self) -> None:
        """Until the next record arrives (a live feed's long poll)."""
        event = anyio.Event()
        self._changed.append(event)
        await event.wait()


# C0 and C1 control characters (and DEL): written as escapes in log lines, so a client value cannot start a line of
# its own or hide what follows it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def loggable(value: str) -> str:
    """A client-supplied value as it may appear in a log line: control characters escaped (`\\n`, `\\x1b`)."""
    if _CONTROL.search(value) is None:
        return value
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), value)


def log_request(record: RequestRecord) -> None:
    """The request log line: one per request, formatted only when INFO is enabled."""
    if not log.isEnabledFor(logging.INFO):
        return
    parts = [record.method, loggable(record.path)]
    if record.requested_model is not None:
        parts.append(f"model={loggable(record.requested_model)!r}")
    if record.rule is not None:
        parts.append(f"rule={record.rule_index}:{record.rule!r}")
    if record.target is not None:
        parts.append(f"target={loggable(record.target)}")
    parts.append(f"status={record.status}")
    if record.attempts:
        parts.append(f"attempts={len(record.attempts)}")
    parts.append(f"latency={record.latency_ms:.0f}ms")
    if record.usage is not None:
        parts.append(f"tokens={record.usage.input}/{record.usage.output}")
        if record.usage.cache_read:
            parts.append(f"cache_read={record.usage.cache_read}")
    if record.stream:
        parts.append("stream")
    if record.error:
        parts.append(f"error={record.error}")
    if record.truncated:
        parts.append("truncated")
    if record.client_disconnected:
        parts.append("client_disconnected")
    log.info(" ".join(parts))
