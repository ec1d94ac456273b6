"""The ledger behind the core's metering seam (`ccm.core.metering`): keys, holds, settlement, the failure policy.

    LedgerMetering(ledger, policy)     what the API app calls: identify a key, admit a routed request, settle it
    usage_row(record, key, markup)     a finished request's record as the ledger's usage row (cost from its price)

Every request is metered, the local caller's too (a row, no hold). A key with credit, a budget or limits is held
for (`ccm.ledger.holds.hold_for`, the dearest model of the request's fallback chain) and its hold is kept ahead of a
streamed answer (`OutputMeter`). Refusals become Anthropic's errors: 402 `billing_error` (credit, budget: the message
says the balance and how to get more), 403 `permission_error` (a model the key may not use), 429 `rate_limit_error`
with `retry-after` and `anthropic-ratelimit-*` headers, 401 for a revoked or expired key.

When the ledger cannot be reached (`LedgerUnavailable`), the route file's `ledger fail` policy decides: `closed`
answers 503 until it is back; `open` serves, keeps each row in a local journal (`Journal`, JSON lines beside the
SQLite file or in the data folder) and writes them to the ledger once it answers again. `health()` says which, and
since when.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anyio
import orjson

from ccm.core.metering import AdmissionRequest, Admitted, Report
from ccm.core.record import Caller, RequestRecord
from ccm.errors import ApiError
from ccm.ledger.apis import cost_report, json_bytes, messages_usage_report, openrouter_key
from ccm.ledger.cost import cost, markup_for
from ccm.ledger.errors import BadInput, LedgerUnavailable
from ccm.ledger.holds import OutputMeter, hold_for, minimum_for
from ccm.ledger.ledger import Ledger
from ccm.ledger.records import Hold, KeyInfo, UsageRow
from ccm.ledger.refusals import KeyRefused, OutOfCredit, OverBudget, RateLimited, Refusal
from ccm.ledger.times import now
from ccm.table import Model, Price, SpendPeriod, Standing
from ccm.usage import TokenUsage

log = logging.getLogger("ccm.ledger")

FailurePolicy = Literal["closed", "open"]
AUDIT_SECONDS = 60.0  # how often the invariant is checked for /health
REPLAY_SECONDS = 5.0  # how often a journal of rows written while the ledger was away is replayed


@dataclass(slots=True)
class LedgerMetering:
    ledger: Ledger
    policy: FailurePolicy = "closed"  # the route file's `ledger fail …`, as the last request read it
    journal: Journal | None = None
    unavailable_since: float | None = None
    last_audit: dict[str, Any] = field(default_factory=dict)

    # --- the core's seam --------------------------------------------------------------------------------------------

    async def identify(self, secret: str) -> Caller | None:
        try:
            key = await self.ledger.authenticate(secret)
        except LedgerUnavailable as error:
            self._away(error)
            if self.policy == "closed":
                raise _unavailable() from None
            return None  # open: not recognised now; the file's own keys or the local caller decide
        self._back()
        if key is None:
            return None
        status = key.status(now())
        if status != "active":
            raise ApiError(401, f"this ccm key is {status}; ask for a new one", "authentication_error")
        return Caller("key", str(key.id), key.name, key.plan, key.team, handle=key)

    async def admit(self, request: AdmissionRequest) -> Admitted:
        self.policy = request.settings.ledger_failure
        file_markup = request.settings.markup
        key: KeyInfo | None = request.caller.handle if request.caller.kind == "key" else None
        if key is None:
            return Settlement(self, None, file_markup, None, None)
        routed = request.chain[0].name
        allowed = key.models or next((p.models for p in request.policies if p.models), ())
        if allowed and routed not in allowed:
            raise ApiError(403, f"key `{key.name}` may not use model `{routed}` (it may use: {', '.join(allowed)})",
                           "permission_error")
        plan_markup = next((p.markup for p in request.policies if p.markup is not None), None)
        markup = markup_for(key.markup, plan_markup, file_markup)
        if not key.checked:
            return Settlement(self, key, markup, None, None)
        price = _dearest(request.chain)
        amount = hold_for(price, markup, request.input_tokens, request.max_tokens)
        floor = minimum_for(price, markup, request.input_tokens) if price is not None else None
        tokens = request.input_tokens + min(request.max_tokens, 4096)
        try:
            hold = await self.ledger.admit(key, request.request_id, amount, tokens, minimum=floor)
        except Refusal as refusal:
            raise _refused(refusal) from None
        except LedgerUnavailable as error:
            self._away(error)
            if self.policy == "closed":
                raise _unavailable() from None
            return Settlement(self, key, markup, None, None)
        self._back()
        meter = OutputMeter(self.ledger, hold, price, markup, request.input_tokens) if price is not None else None
        return Settlement(self, key, markup, hold, meter)

    @property
    def reports(self) -> Mapping[str, Report]:
        return {
            "/v1/key": self._key_report,
            "/v1/organizations/usage_report/messages": self._usage_report,
            "/v1/organizations/cost_report": self._cost_report,
        }

    async def _key_report(self, caller: Caller, query: Mapping[str, list[str]], admin: bool) -> bytes:
        """OpenRouter's `GET /api/v1/key`, for the key that asks: its own balance and limits, nothing else."""
        key: KeyInfo | None = caller.handle if caller.kind == "key" else None
        if key is None:
            raise ApiError(401, "GET /v1/key answers for an issued ccm key: send it as x-api-key",
                           "authentication_error")
        info, account = await self.ledger.key(key.name)
        return json_bytes(await openrouter_key(self.ledger.store, info, account, now()))

    async def _usage_report(self, caller: Caller, query: Mapping[str, list[str]], admin: bool) -> bytes:
        return json_bytes(await self._admin_report(messages_usage_report, query, admin))

    async def _cost_report(self, caller: Caller, query: Mapping[str, list[str]], admin: bool) -> bytes:
        return json_bytes(await self._admin_report(cost_report, query, admin))

    async def _admin_report(self, report: Any, query: Mapping[str, list[str]], admin: bool) -> dict[str, Any]:
        if not admin:
            raise ApiError(403, "the organization's usage and cost reports need the admin key (CCM_ADMIN_KEY)",
                           "permission_error")
        try:
            result: dict[str, Any] = await report(self.ledger.store, query, now)
        except BadInput as error:
            raise ApiError(400, f"{error.message}" + (f" ({error.hint})" if error.hint else "")) from None
        return result

    async def standing(self, caller: Caller) -> Standing:
        key: KeyInfo | None = caller.handle
        if key is None:
            return Standing()
        info, account = await self.ledger.key(key.name)
        data = (await openrouter_key(self.ledger.store, info, account, now()))["data"]
        limit, remaining = data["limit"], data["limit_remaining"]
        left = remaining / limit * 100 if limit and remaining is not None else None
        spent: tuple[tuple[SpendPeriod, Decimal], ...] = (
            ("today", data["usage_daily"]), ("week", data["usage_weekly"]), ("month", data["usage_monthly"]))
        return Standing(key=key.name, plan=key.plan, team=key.team, budget_left=left, spent=spent)

    def health(self) -> dict[str, object]:
        view: dict[str, object] = {"failure_policy": self.policy, "available": self.unavailable_since is None}
        if self.unavailable_since is not None:
            view["unavailable_since"] = _iso(self.unavailable_since)
        if self.journal is not None and self.journal.pending:
            view["journaled"] = self.journal.pending
        view.update(self.last_audit)
        return view

    # --- what settlement calls --------------------------------------------------------------------------------------

    async def finish(self, hold: Hold | None, row: UsageRow) -> None:
        try:
            if hold is not None:
                await self.ledger.settle(hold, row)
            else:
                await self.ledger.record(row)
        except LedgerUnavailable as error:
            self._away(error)
            if self.journal is None:
                raise
            self.journal.add(row, hold)
            return
        self._back()

    # --- lifespan tasks -----------------------------------------------------------------------------------------------

    async def watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The invariant checked every `AUDIT_SECONDS` for /health, and the journal replayed once the ledger
        answers again."""
        task_status.started()
        next_audit = 0.0
        while True:
            if self.journal is not None and self.journal.pending:
                await self._replay()
            if time.monotonic() >= next_audit:
                await self._audit()
                next_audit = time.monotonic() + AUDIT_SECONDS
            await anyio.sleep(REPLAY_SECONDS)

    async def _audit(self) -> None:
        try:
            problems = await self.ledger.audit()
        except LedgerUnavailable as error:
            self._away(error)
            return
        self.last_audit = {"invariant": "holds" if not problems else "broken", "checked_at": _iso(time.time())}
        if problems:
            self.last_audit["problems"] = problems[:10]
            log.error("the ledger's invariant does not hold: %s", "; ".join(problems[:10]))

    async def _replay(self) -> None:
        assert self.journal is not None
        for row in self.journal.take():
            try:
                await self.ledger.record(row)
            except LedgerUnavailable as error:
                self._away(error)
                self.journal.add(row, None)
                return
        self._back()

    def _away(self, error: LedgerUnavailable) -> None:
        if self.unavailable_since is None:
            self.unavailable_since = time.time()
            log.error("the ledger is unavailable (%s); failing %s", error, self.policy)

    def _back(self) -> None:
        if self.unavailable_since is not None:
            log.warning("the ledger is available again after %.0f s", time.time() - self.unavailable_since)
            self.unavailable_since = None


@dataclass(slots=True)
class Settlement:
    """One admitted request: what it holds (if anything) and how it is settled, once."""

    metering: LedgerMetering
    key: KeyInfo | None
    markup: Decimal  # the key's, else the file's, when the request was admitted
    hold: Hold | None
    output_meter: OutputMeter | None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.hold is not None and self.hold.limits:
            self.headers = _ratelimit_headers(self.hold)

    @property
    def drains(self) -> bool:
        # reading on costs what the upstream keeps generating: worth it only where someone is billed from a balance
        return self.hold is not None

    def covers(self, output_tokens: int) -> bool:
        meter = self.output_meter
        return meter is None or output_tokens <= meter.covered() - meter.policy.margin

    async def meter(self, output_tokens: int) -> bool:
        meter = self.output_meter
        if meter is None:
            return True
        try:
            return await meter.grow(output_tokens)
        except LedgerUnavailable as error:
            self.metering._away(error)
            return self.metering.policy == "open"

    async def settle(self, record: RequestRecord) -> None:
        hold = self.output_meter.hold if self.output_meter is not None else self.hold
        row = usage_row(record, self.key.id if self.key is not None else None, self.markup)
        await self.metering.finish(hold, row)


def usage_row(record: RequestRecord, key_id: int | None, markup: Decimal) -> UsageRow:
    usage = record.usage or TokenUsage()
    price = record.price
    last = record.attempts[-1] if record.attempts else None
    return UsageRow(
        request_id=record.request_id,
        usage=usage,
        cost=cost(usage, price, markup),
        price=price,
        markup=markup,
        key_id=key_id,
        session=record.session_id,
        rule=record.rule,
        model=record.model,
        provider=last.provider if last is not None else None,
        upstream_model=last.upstream_model if last is not None else None,
        attempts=len(record.attempts),
        stream=record.stream,
        status=record.status,
        error=record.error if record.outcome != "client_closed" else (record.error or "caller_cancelled"),
        latency_ms=int(record.latency_ms),
        ttft_ms=int(record.ttfb_ms) if record.ttfb_ms is not None else None,
        estimated=record.usage_estimated,
        truncated=record.truncated,
    )


def _dearest(chain: tuple[Model, ...]) -> Price | None:
    """The price a hold is computed at: the dearest output rate of the chain (a fallback may answer instead)."""
    priced = [m.price for m in chain if m.price is not None]
    return max(priced, key=lambda p: (p.output, p.input)) if priced else None


def _refused(refusal: Refusal) -> ApiError:
    message = refusal.message
    if isinstance(refusal, KeyRefused):
        return ApiError(401, message, "authentication_error")
    if isinstance(refusal, OutOfCredit):
        # the key's holder cannot add credit themselves: say who can, and how
        more = f"To get more, ask whoever runs this ccm to add credit (`ccm credits add {refusal.name} 10`)."
        return ApiError(402, f"{message}. {more}", "billing_error", (("x-should-retry", "false"),))
    if isinstance(refusal, OverBudget):
        return ApiError(402, f"{message}; {refusal.hint}.", "billing_error", (("x-should-retry", "false"),))
    if isinstance(refusal, RateLimited):
        retry = max(1, int(refusal.retry_after + 0.999))
        headers = (("retry-after", str(retry)), *_limit_headers(refusal.kind, refusal.limit, refusal.remaining,
                                                                 refusal.reset_at))
        return ApiError(429, message, "rate_limit_error", headers)
    return ApiError(403, message, "permission_error")


def _unavailable() -> ApiError:
    return ApiError(503, "the usage ledger is unavailable, and this router fails closed without it; try again "
                         "shortly", "api_error")


def _ratelimit_headers(hold: Hold) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for state in hold.limits:
        out += _limit_headers(state.kind, state.limit, state.remaining, state.reset_at)
    return tuple(out)


def _limit_headers(kind: str, limit: int, remaining: int, reset_at: int) -> list[tuple[str, str]]:
    """Anthropic's rate-limit headers (what Claude Code backs off by): requests for rpm, tokens for tpm."""
    what = "requests" if kind == "rpm" else "tokens"
    reset = datetime.datetime.fromtimestamp(reset_at / 1e6, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [(f"anthropic-ratelimit-{what}-limit", str(limit)),
            (f"anthropic-ratelimit-{what}-remaining", str(max(remaining, 0))),
            (f"anthropic-ratelimit-{what}-reset", reset)]


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class Journal:
    """Rows written while the ledger was away (`ledger fail open`): JSON lines in a file, replayed in order once it
    answers again. Each line is written and flushed before the answer goes out, so a crash loses none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending = self._count()

    def add(self, row: UsageRow, hold: Hold | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as file:
            file.write(orjson.dumps(_row_json(row)) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        self.pending += 1

    def take(self) -> Iterator[UsageRow]:
        """The journaled rows, the file emptied (a row that fails again is added back by the caller)."""
        if not self.path.exists():
            return iter(())
        lines = self.path.read_bytes().splitlines()
        self.path.unlink()
        self.pending = 0
        return (_row_from_json(orjson.loads(line)) for line in lines if line.strip())

    def _count(self) -> int:
        try:
            return sum(1 for line in self.path.read_bytes().splitlines() if line.strip())
        except FileNotFoundError:
            return 0


def _row_json(row: UsageRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id, "usage": [getattr(row.usage, f) for f in TokenUsage.__dataclass_fields__],
        "price": row.price.model_dump(mode="json") if row.price is not None else None, "markup": str(row.markup),
        "key_id": row.key_id, "session": row.session, "rule": row.rule, "model": row.model,
        "provider": row.provider, "upstream_model": row.upstream_model, "attempts": row.attempts,
        "stream": row.stream, "status": row.status, "error": row.error, "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms, "estimated": row.estimated, "truncated": row.truncated, "time": now(),
    }


def _row_from_json(data: dict[str, Any]) -> UsageRow:
    usage = TokenUsage(*data["usage"])
    price = Price.model_validate(data["price"]) if data["price"] is not None else None
    markup = Decimal(data["markup"])
    return UsageRow(
        request_id=data["request_id"], usage=usage, cost=cost(usage, price, markup), price=price, markup=markup,
        key_id=data["key_id"], session=data["session"], rule=data["rule"], model=data["model"],
        provider=data["provider"], upstream_model=data["upstream_model"], attempts=data["attempts"],
        stream=data["stream"], status=data["status"], error=data["error"], latency_ms=data["latency_ms"],
        ttft_ms=data["ttft_ms"], estimated=data["estimated"], truncated=data["truncated"], time=data["time"],
    )

