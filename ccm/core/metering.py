"""Metering: the seam between the request path and what accounts for requests (the ledger, through `ccm.metering`).

    Metering.identify(secret) -> Caller | None   an issued key's caller (None: not one); `ApiError` 401 when the key
                                                 is revoked or expired
    Metering.admit(request) -> Admitted          before dispatch: what may be spent is held; `ApiError` 402 (credit,
                                                 budget), 403 (a model the key may not use), 429 (rpm/tpm, with
                                                 `retry-after`), 503 (the ledger is unreachable and fails closed)
    Admitted.covers(tokens) / meter(tokens)      a stream's output so far (an upper bound, `Usage.streamed_chars`):
                                                 `covers` is the cheap check made before each chunk, `meter` the
                                                 call that grows the hold when it does not (None: go on; an
                                                 error: the answer stops here with it)
    Admitted.settle(record)                      once, before the answer's last bytes go out (success or failure):
                                                 what is settled is settled before the client has the whole answer
    Metering.standing(caller)                    what is left of a key's budget and what it spent, for the rules
                                                 that read it (`budget < 20%`, `spent today > $5`)
    Metering.reports[path](caller, query, admin) the JSON reports it answers under `/v1/`

The core knows nothing of keys, money or storage: it hands over the request's facts and, at the end, its record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from ccm.core.record import Caller, RequestRecord
from ccm.errors import UpstreamError
from ccm.frozen import frozen
from ccm.table import Model, Policy, Settings, Standing


@frozen
class AdmissionRequest:
    request_id: str
    caller: Caller
    chain: tuple[Model, ...]  # the routed model, then its fallbacks: a hold covers the dearest of them
    input_tokens: int  # the local count
    max_tokens: int
    settings: Settings  # the routing table's: its markup and what to do when metering is unreachable
    policies: tuple[Policy, ...] = ()  # the route file's plan and team the caller's key belongs to, the plan's first


class Admitted(Protocol):
    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Headers for the answer (`anthropic-ratelimit-*` when the key has limits)."""

    @property
    def holds(self) -> bool:
        """Whether something is held for the request (a key billed from a balance or budget). Then settling waits
        for the ledger (the request's record is built again after it, so its timings count the wait), and a stream
        whose client leaves is read on to the upstream's final usage; otherwise it is cancelled at once, as without
        metering, and billed an estimate."""

    def covers(self, output_tokens: int) -> bool: ...

    async def meter(self, output_tokens: int) -> UpstreamError | None: ...

    async def settle(self, record: RequestRecord) -> None: ...


# A report metering answers over HTTP (`GET`, JSON): for the caller, its query parameters, and whether the caller
# holds the admin key. Raises `ApiError` (400 for bad parameters, 403 when the caller may not read it).
Report = Callable[[Caller, Mapping[str, list[str]], bool], Awaitable[bytes]]


class Metering(Protocol):
    async def identify(self, secret: str) -> Caller | None: ...

    async def admit(self, request: AdmissionRequest) -> Admitted: ...

    async def standing(self, caller: Caller) -> Standing:
        """What routing may read of an issued key: what is left of its budget (its own, else its plan's or team's)
        and what it spent (`budget`, `spent` rules), asked only when the table has such rules."""

    @property
    def reports(self) -> Mapping[str, Report]:
        """Path -> report, under `/v1/` (a key's own `/v1/key`; the admin's usage and cost reports)."""

    def health(self) -> dict[str, object]:
        """What `/health` says of it (reachable, failure policy, the invariant's last check)."""
