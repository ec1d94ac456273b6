"""The ledger behind the core's metering seam (`ccm.core.metering`): keys, holds, settlement, the failure policy.

    LedgerMetering(ledger, journal)    what the API app calls: identify a key, admit a routed request, settle it
    LedgerCosts()                      the money figures of /metrics and the statusline (`ccm.costs.Costs`) from
                                       the ledger: a request's charge, a session's total, the keys' balances
    usage_row(record, key, markup, at) a finished request's record as the ledger's usage row (cost from its price)

Every request is metered, the local caller's too (a row, no hold). A key with credit, a budget or limits (its own,
else its plan's or team's from the route file: `limits_of(request.policies)`) is held for
(`ccm.ledger.holds.hold_for`, the dearest model of the request's fallback chain) and its hold is kept ahead of a
streamed answer (`OutputMeter`). Refusals become Anthropic's errors: 402 `billing_error` (credit, budget: the message
says the balance and how to get more), 403 `permission_error` (a model the key may not use), 429 `rate_limit_error`
with `retry-after` and `anthropic-ratelimit-*` headers, 401 for a revoked or expired key.

When the ledger cannot be reached (`LedgerUnavailable`), the route file's `ledger fail` policy decides (read from
the table being served, so a reload that changes it applies at once):

    closed (default)   every metered request is answered 503 `api_error` (`x-should-retry: true`, `retry-after`)
                       until the ledger answers again; the local caller's requests too, once the outage is known
                       (each such request then tries the database first, at most once a second, to see it back)
    open               the local caller is served, and so is a key with nothing to check, by what the database said
                       of it when it last answered (`Ledger.last_seen`; a key it never answered for cannot be told
                       from a forged one: 503); a key with credit, a budget or limits still gets the 503, because
                       what it may spend cannot be checked

Either way a row that cannot be written waits in the journal (`ccm.ledger.journal`: per-process files beside the
SQLite file, or in the data folder) and is written once the ledger answers, closing its hold if it had one: a
request admitted before the outage (a stream in flight) is answered in full and settled later — unless its hold
must grow on the way, which `fail closed` refuses (`LEDGER_LOST`) and `fail open` lets it outgrow. `health()` says the
policy, whether the ledger is available and since when, and how many rows are journaled. The journal is also how a
request that holds nothing is settled without waiting for the database.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import anyio

from ccm.core.metering import AdmissionRequest, Admitted, Report
from ccm.core.record import Caller, RequestRecord
from ccm.costs import PriceListCosts
from ccm.errors import ApiError, UpstreamError
from ccm.ledger.apis import cost_report, json_bytes, messages_usage_report, openrouter_key
from ccm.ledger.cost import cost, markup_for
from ccm.ledger.errors import BadInput, LedgerUnavailable
from ccm.ledger.holds import OutputMeter, hold_for, minimum_for
from ccm.ledger.journal import Journal
from ccm.ledger.keys import looks_like_secret
from ccm.ledger.ledger import Ledger
from ccm.ledger.money import Money, to_decimal
from ccm.ledger.records import Hold, KeyInfo, UsageRow, limits_of
from ccm.ledger.refusals import KeyRefused, OutOfCredit, OverBudget, RateLimited, Refusal
from ccm.ledger.store.ops import ANY_KEY
from ccm.ledger.times import Micros, now
from ccm.table import Model, Policy, Price, SpendPeriod, Standing
from ccm.usage import TokenUsage

log = logging.getLogger("ccm.ledger")

FailurePolicy = Literal["closed", "open"]
AUDIT_SECONDS = 60.0  # how often the invariant is checked for /health
CHARGES_KEPT = 4096  # the charges of the last requests, for their records' subscribers (records go out at once)
PROBE_SECONDS = 1.0  # while the ledger is away under `fail closed`, how often a local request tries it again
RETRY_AFTER_SECONDS = 5  # what a 503 tells the client to wait (Claude Code retries a 5xx after `retry-after`)


@dataclass(slots=True)
class LedgerMetering:
    ledger: Ledger
    journal: Journal
    policy_of: Callable[[], FailurePolicy] = lambda: "closed"  # the served table's `ledger fail …`
    # the served table's plan and team of a key (`RoutingTable.policies_of`), for what is asked beside admission
    # (the key report, the standing budget rules read)
    policies_of: Callable[[str | None, str | None], tuple[Policy, ...]] = lambda plan, team: ()
    unavailable_since: float | None = None
    last_audit: dict[str, Any] = field(default_factory=dict)
    charges: OrderedDict[str, Money] = field(default_factory=OrderedDict)  # request id -> charged, the last few
    _probed_at: float = -PROBE_SECONDS  # when a request last tried the ledger because it was away (monotonic)

    @property
    def policy(self) -> FailurePolicy:
        return self.policy_of()

    # --- the core's seam --------------------------------------------------------------------------------------------

    async def identify(self, secret: str) -> Caller | None:
        if not looks_like_secret(secret):  # the client's own credential (a Claude login, an Anthropic key): not ccm's
            return None
        try:
            found = await self.ledger.authenticate(secret)
        except LedgerUnavailable as error:
            self._away(error)
            found = self.ledger.last_seen(secret) if self.policy == "open" else None
            if found is None or found.checked:  # unknown (maybe forged), or a balance, budget or limits to check
                raise _unavailable() from None
        else:
            self._back()
        if found is None:  # ccm's shape, no ccm's key: never served as the local caller instead
            raise ApiError(401, "this ccm key is not one this router issued (mistyped, or from another ccm); "
                                "check ANTHROPIC_API_KEY or ask for a new key", "authentication_error")
        key = found
        status = key.status(now())
        if status != "active":
            raise ApiError(401, f"this ccm key is {status}; ask for a new one", "authentication_error")
        return Caller("key", str(key.id), key.name, key.plan, key.team, handle=key)

    async def admit(self, request: AdmissionRequest) -> Admitted:
        file_markup = request.settings.markup
        key: KeyInfo | None = request.caller.handle if request.caller.kind == "key" else None
        if key is None:
            await self._closed_gate()
            return Settlement(self, None, file_markup, None, None)
        routed = request.chain[0].name
        allowed = key.models or next((p.models for p in request.policies if p.models), ())
        if allowed and routed not in allowed:
            raise ApiError(403, f"key `{key.name}` may not use model `{routed}` (it may use: {', '.join(allowed)})",
                           "permission_error")
        plan_markup = next((p.markup for p in request.policies if p.markup is not None), None)
        markup = markup_for(key.markup, plan_markup, file_markup)
        inherited = limits_of(request.policies)
        if not key.under(inherited).checked:  # a plan's budget or limits are checked as the key's own would be
            return Settlement(self, key, markup, None, None)
        price = _dearest(request.chain)
        amount = hold_for(price, markup, request.input_tokens, request.max_tokens)
        floor = minimum_for(price, markup, request.input_tokens) if price is not None else None
        tokens = request.input_tokens + min(request.max_tokens, 4096)
        try:
            hold = await self.ledger.admit(key, request.request_id, amount, tokens, minimum=floor, inherited=inherited)
        except Refusal as refusal:
            raise _refused(refusal) from None
        except LedgerUnavailable as error:  # either policy: what the key may spend cannot be checked
            self._away(error)
            raise _unavailable() from None
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
        await self._written()
        info, account = await self.ledger.key(key.name)
        inherited = limits_of(self.policies_of(info.plan, info.team))
        return json_bytes(await openrouter_key(self.ledger.store, info.under(inherited), account, now()))

    async def _usage_report(self, caller: Caller, query: Mapping[str, list[str]], admin: bool) -> bytes:
        return json_bytes(await self._admin_report(messages_usage_report, query, admin))

    async def _cost_report(self, caller: Caller, query: Mapping[str, list[str]], admin: bool) -> bytes:
        return json_bytes(await self._admin_report(cost_report, query, admin))

    async def _admin_report(self, report: Any, query: Mapping[str, list[str]], admin: bool) -> dict[str, Any]:
        if not admin:
            raise ApiError(403, "the organization's usage and cost reports need the admin key (CCM_ADMIN_KEY)",
                           "permission_error")
        await self._written()
        try:
            result: dict[str, Any] = await report(self.ledger.store, query, now)
        except BadInput as error:
            raise ApiError(400, f"{error.message}" + (f" ({error.hint})" if error.hint else "")) from None
        return result

    async def standing(self, caller: Caller) -> Standing:
        key: KeyInfo | None = caller.handle
        if key is None:
            return Standing()
        try:
            info, account = await self.ledger.key(key.name)
            # `budget < 20%` reads a plan's budget as admission does
            effective = info.under(limits_of(self.policies_of(info.plan, info.team)))
            data = (await openrouter_key(self.ledger.store, effective, account, now()))["data"]
        except LedgerUnavailable as error:  # the rules that read a key's spend cannot be decided without it
            self._away(error)
            raise _unavailable() from None
        limit, remaining = data["limit"], data["limit_remaining"]
        left = remaining / limit * 100 if limit and remaining is not None else None
        spent: tuple[tuple[SpendPeriod, Decimal], ...] = (
            ("today", data["usage_daily"]), ("week", data["usage_weekly"]), ("month", data["usage_monthly"]))
        return Standing(key=key.name, plan=key.plan, team=key.team, budget_left=left, spent=spent)

    async def _closed_gate(self) -> None:
        """Under `fail closed`, a request that does not otherwise touch the database before it is served (the local
        caller; a key was just looked up) is refused while the ledger is known to be away: it tries the ledger
        first, at most once every `PROBE_SECONDS`, and is served when it answers."""
        if self.unavailable_since is None or self.policy != "closed":
            return
        if time.monotonic() - self._probed_at < PROBE_SECONDS:
            raise _unavailable()
        self._probed_at = time.monotonic()
        try:
            await self.ledger.ping()
        except LedgerUnavailable as error:
            self._away(error)
            raise _unavailable() from None
        self._back()

    async def _written(self) -> None:
        """The journal's rows in the ledger, so a report counts every request answered before it was asked for."""
        try:
            await self.journal.flush()
        except LedgerUnavailable as error:
            self._away(error)
            raise _unavailable() from None

    def health(self) -> dict[str, object]:
        view: dict[str, object] = {"failure_policy": self.policy, "available": self.unavailable_since is None}
        if self.unavailable_since is not None:
            view["unavailable_since"] = _iso(self.unavailable_since)
        if self.unavailable_since is not None and self.journal.pending:
            view["journaled"] = self.journal.pending  # rows kept until the ledger answers
        view.update(self.last_audit)
        return view

    # --- what settlement calls --------------------------------------------------------------------------------------

    async def finish(self, hold: Hold | None, row: UsageRow) -> None:
        """A row with no hold is journaled and written behind the answer (`ccm.ledger.journal`); a hold is settled
        now, or journaled with its row when the ledger cannot be reached (the row closes the hold when written)."""
        if row.cost.priced:
            self.charges[row.request_id] = row.cost.charged
            if len(self.charges) > CHARGES_KEPT:
                self.charges.popitem(last=False)
        if hold is None:
            self.journal.add(row)
            return
        try:
            await self.ledger.settle(hold, row)
        except LedgerUnavailable as error:
            self._away(error)
            self.journal.add(row)
            return
        self._back()

    # --- lifespan tasks -----------------------------------------------------------------------------------------------

    async def watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The journal written behind the answers, and the invariant checked every `AUDIT_SECONDS` for /health."""
        async with anyio.create_task_group() as tasks:
            await tasks.start(self.journal.run, self._away, self._back)
            task_status.started()
            while True:
                await self._audit()
                await anyio.sleep(AUDIT_SECONDS)

    async def balances(self) -> dict[str, Decimal]:
        """Key id -> balance, of the active keys with credit."""
        keys = await self.ledger.keys()
        at = now()
        return {str(key.id): to_decimal(account.balance) for key, account in keys
                if key.credits and key.status(at) == "active"}

    async def session_charged(self, session_id: str, caller: Caller | None) -> Money | None:
        """What the session's rows made by `caller` (None: anyone) were charged, the journal's included."""
        key_id = ANY_KEY if caller is None else int(caller.key_id) if caller.kind == "key" and caller.key_id else None
        await self.journal.flush()
        return await self.ledger.session_charged(session_id, key_id)

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

    def _away(self, error: LedgerUnavailable) -> None:
        if self.unavailable_since is None:
            self.unavailable_since = time.time()
            log.error("the ledger is unavailable (%s); failing %s", error, self.policy)

    def _back(self) -> None:
        if self.unavailable_since is not None:
            log.warning("the ledger is available again after %.0f s", time.time() - self.unavailable_since)
            self.unavailable_since = None
            self.journal.retry_now()  # what waits in the journal is written now, not at its next retry


class LedgerCosts:
    """`ccm.costs.Costs` from the ledger, once `attach`ed (the ledger opens with the server's lifespan; until then,
    and for a request whose charge it no longer keeps, the route file's list price): a request's cost is what it was
    charged, markup included; a session's is the sum of its rows in the store, which every worker and instance
    shares; balances are those of the keys with credit, read at each scrape."""

    def __init__(self) -> None:
        self.metering: LedgerMetering | None = None
        self._list_price = PriceListCosts()

    def attach(self, metering: LedgerMetering | None) -> None:
        self.metering = metering

    def request_cost(self, record: RequestRecord) -> Decimal | None:
        charged = self.metering.charges.get(record.request_id) if self.metering is not None else None
        return to_decimal(charged) if charged is not None else self._list_price.request_cost(record)

    async def session_cost(self, session_id: str, caller: Caller | None) -> Decimal | None:
        if self.metering is None:
            return None
        try:
            charged = await self.metering.session_charged(session_id, caller)
        except LedgerUnavailable:
            return None  # the statusline shows what it can
        return to_decimal(charged) if charged is not None else None

    async def balances(self) -> Mapping[str, Decimal]:
        if self.metering is None:
            return {}
        try:
            return await self.metering.balances()
        except LedgerUnavailable as error:
            self.metering._away(error)
            return {}


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
    def holds(self) -> bool:
        # a hold is what settling waits for, and reading on (which costs what the upstream keeps generating) is
        # worth it only where someone is billed from a balance
        return self.hold is not None

    def covers(self, output_tokens: int) -> bool:
        meter = self.output_meter
        return meter is None or output_tokens <= meter.covered() - meter.policy.margin

    async def meter(self, output_tokens: int) -> UpstreamError | None:
        meter = self.output_meter
        if meter is None:
            return None
        try:
            return None if await meter.grow(output_tokens) else OUT_OF_CREDIT
        except LedgerUnavailable as error:
            self.metering._away(error)
            # open: the answer goes on past its hold, an overshoot bounded by its max_tokens
            return None if self.metering.policy == "open" else LEDGER_LOST

    async def settle(self, record: RequestRecord) -> None:
        hold = self.output_meter.hold if self.output_meter is not None else self.hold
        key_id = self.key.id if self.key is not None else None
        row = usage_row(record, key_id, self.markup, self.metering.ledger.clock())
        await self.metering.finish(hold, row)


def usage_row(record: RequestRecord, key_id: int | None, markup: Decimal, finished_at: Micros) -> UsageRow:
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
        time=finished_at,
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


# A stream stopped because the caller's key could not pay for more of it (the ledger refused to grow its hold).
OUT_OF_CREDIT = UpstreamError(402, "the key's credit or budget ran out during this answer; it stops here",
                              "4xx", "", "billing_error")
# A stream stopped because its hold had to grow and the ledger could not be reached (`fail closed`): not the key's
# credit running out, which `OUT_OF_CREDIT` would tell Claude Code.
LEDGER_LOST = UpstreamError(503, "the usage ledger became unavailable during this answer, and it cannot go on past "
                                 "what was held for it; it stops here", "5xx", "", "api_error")


def _unavailable() -> ApiError:
    # 503 with an explicit retry: the outage is expected to pass, and the Anthropic SDK waits `retry-after` seconds
    return ApiError(503, "the usage ledger is unavailable, and this request cannot be served without it; try "
                         "again shortly", "api_error",
                    (("x-should-retry", "true"), ("retry-after", str(RETRY_AFTER_SECONDS))))


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
