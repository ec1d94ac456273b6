"""A key as the pages show it — its standing, its usage charts, its latest requests, the models it may use — built
once per request from the ledger's values; the dashboard (`/`, for the key itself) and the admin's key page share it.

    await ledger_of(service) -> Ledger                the open ledger, the journal's rows written (or `NoLedger`)
    await under_policies(ledger, table, key)           the key under its plan's and team's budget and limits
    standing(key, account, at, spent) -> Standing     balance, spend, budget and its period, limits, status
    usage_view(activity) -> UsageView                 the 24-hour and 30-day charts and tables, the latest requests
    offered_models(table, key) -> [OfferedModel]      what the key may use, at the prices it pays, with windows

Money stays integer nano-dollars until it is written as text (`format_usd`); a chart gets nano-dollars and a label
function, never a float. Times are UTC, as the ledger's budget periods are.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from markupsafe import Markup

from ccm.frozen import frozen
from ccm.ledger import admission
from ccm.ledger.activity import TOKEN_CLASSES, Activity, Bucket, Series
from ccm.ledger.cost import markup_for
from ccm.ledger.errors import LedgerUnavailable
from ccm.ledger.ledger import Ledger
from ccm.ledger.money import Money, format_usd
from ccm.ledger.records import Account, KeyInfo, limits_of
from ccm.ledger.times import Micros, period_end, to_datetime
from ccm.table import RoutingTable
from ccm.web.chart import column_chart

MODEL_SERIES = 5  # the most charged models get a series each; the rest are "other"


class NoLedger(Exception):
    """The pages cannot read the ledger now: the message says why (none configured, or it cannot be reached)."""


async def ledger_of(service: Any) -> Ledger:
    """`service`'s open ledger with every request answered so far written to it (the journal flushed), so a page
    counts what its reader just did."""
    metering = service.metering
    if metering is None:
        raise NoLedger("this ccm runs without a usage ledger (--no-ledger): there are no keys or usage to show")
    try:
        await metering.journal.flush()
    except LedgerUnavailable as error:
        raise NoLedger(f"the usage ledger cannot be reached now: {error.message}") from None
    ledger: Ledger = metering.ledger
    return ledger


def utc(at: Micros) -> str:
    return to_datetime(at).strftime("%Y-%m-%d %H:%M:%S UTC")


@frozen
class Standing:
    name: str
    prefix: str
    status: str
    prepaid: bool
    balance: str  # "" when the key has no balance (not prepaid)
    credited: str
    spent: str
    held: str
    budget: str  # "" when none
    period: str
    period_spent: str
    resets: str
    rpm: int | None
    tpm: int | None
    budget_from: str  # "plan trial" when the budget (or rpm, tpm) is the plan's or team's; "" when the key's own
    rpm_from: str
    tpm_from: str
    models: tuple[str, ...]
    plan: str
    team: str
    created: str
    expires: str
    revoked: str


async def under_policies(ledger: Ledger, table: RoutingTable, key: KeyInfo) -> tuple[KeyInfo, Money | None]:
    """The key as admission sees it under the served route file (its plan's and team's budget and limits where it
    sets none), and what it spent in the period of a budget it takes from them (None: its budget is its own)."""
    ((effective, spent),) = await all_under_policies(ledger, table, [key])
    return effective, spent


async def all_under_policies(ledger: Ledger, table: RoutingTable,
                             keys: Sequence[KeyInfo]) -> list[tuple[KeyInfo, Money | None]]:
    """`under_policies` for a page of keys, in one read of the ledger."""
    effective = [key.under(limits_of(table.policies_of(key.plan, key.team))) for key in keys]
    if not any(key.budget_inherited for key in effective):  # nothing to read
        return [(key, None) for key in effective]
    return list(zip(effective, await ledger.spent_inherited(effective), strict=True))


def standing(key: KeyInfo, account: Account, at: Micros, spent_inherited: Money | None = None) -> Standing:
    """`key` as `under_policies` gives it (or as stored), with `spent_inherited` for a budget of its plan or team."""
    budget = period_spent = resets = ""
    if key.budget is not None and key.period is not None:
        budget = format_usd(key.budget)
        period_spent = format_usd(admission.period_spent(key, account, at, spent_inherited))
        resets = utc(period_end(key.period, at))
    return Standing(
        name=key.name, prefix=key.prefix, status=key.status(at), prepaid=key.credits,
        balance=format_usd(account.balance) if key.credits else "", credited=format_usd(account.credited),
        spent=format_usd(account.settled), held=format_usd(account.held), budget=budget, period=key.period or "",
        period_spent=period_spent, resets=resets, rpm=key.rpm, tpm=key.tpm,
        budget_from=key.inherited.source("budget") or "", rpm_from=key.inherited.source("rpm") or "",
        tpm_from=key.inherited.source("tpm") or "", models=key.models, plan=key.plan or "",
        team=key.team or "", created=utc(key.created_at), expires=utc(key.expires_at) if key.expires_at else "",
        revoked=utc(key.revoked_at) if key.revoked_at else "",
    )


@frozen
class ModelLine:
    model: str
    requests: int
    errors: int
    tokens: tuple[int, int, int, int]
    cost: str


@frozen
class Window:
    """One window's charts (requests by model, tokens by class, cost by model) and its table by model."""

    title: str
    requests: Markup
    tokens: Markup
    cost: Markup
    lines: tuple[ModelLine, ...]
    total: ModelLine


@frozen
class RecentRow:
    time: str
    request_id: str
    model: str
    rule: str
    target: str
    tokens: tuple[int, int, int, int]
    cost: str
    latency: int
    status: int
    error: str


@frozen
class UsageView:
    hourly: Window
    daily: Window
    recent: tuple[RecentRow, ...]


def _window(series: Series, title: str, column_format: str, every: int) -> Window:
    index = {start: i for i, start in enumerate(series.starts)}
    columns = [to_datetime(start).strftime(column_format) for start in series.starts]
    ranked = series.models
    kept = ranked if len(ranked) <= MODEL_SERIES + 1 else ranked[:MODEL_SERIES]  # "other" for two or more
    names = [m or "(unnamed)" for m in kept] + (["other"] if len(ranked) > len(kept) else [])
    slot = {m: i for i, m in enumerate(kept)}
    requests = [[0] * len(columns) for _ in names]
    cost = [[0] * len(columns) for _ in names]
    tokens = [[0] * len(columns) for _ in TOKEN_CLASSES]
    by_model: dict[str, list[int]] = {}
    for bucket in series.buckets:
        column = index.get(bucket.start)
        if column is None:
            continue
        row = slot.get(bucket.model, len(kept))
        requests[row][column] += bucket.requests
        cost[row][column] += bucket.charged
        for number, count in enumerate(bucket.tokens):
            tokens[number][column] += count
        _add(by_model.setdefault(bucket.model, [0] * 7), bucket)
    lines = tuple(_line(model or "(unnamed)", by_model[model]) for model in ranked)
    total = [0] * 7
    for sums in by_model.values():
        total = [a + b for a, b in zip(total, sums, strict=True)]
    return Window(
        title=title,
        requests=column_chart(columns, list(zip(names, requests, strict=True)), title=f"Requests by model, {title}",
                              every=every),
        tokens=column_chart(columns, list(zip(TOKEN_CLASSES, tokens, strict=True)), title=f"Tokens by class, {title}",
                            label=_tokens, every=every),
        cost=column_chart(columns, list(zip(names, cost, strict=True)), title=f"Cost by model, {title}",
                          label=format_usd, every=every),
        lines=lines, total=_line("total", total),
    )


def _add(sums: list[int], bucket: Bucket) -> None:
    for number, value in enumerate((bucket.requests, bucket.errors, *bucket.tokens)):
        sums[number] += value
    sums[6] += bucket.charged


def _line(model: str, sums: Sequence[int]) -> ModelLine:
    requests, errors, *tokens = sums[:6]
    return ModelLine(model, requests, errors, (tokens[0], tokens[1], tokens[2], tokens[3]), format_usd(sums[6]))


def _tokens(value: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if value >= size:
            return f"{value / size:,.1f}{unit}"
    return f"{value:,}"


def usage_view(activity: Activity) -> UsageView:
    recent = tuple(RecentRow(
        time=utc(r.at), request_id=r.request_id, model=r.model, rule=r.rule,
        target=f"{r.provider}/{r.upstream_model}" if r.provider else "", tokens=r.tokens, cost=format_usd(r.charged),
        latency=r.latency_ms, status=r.status, error=r.error or "",
    ) for r in activity.recent)
    return UsageView(
        hourly=_window(activity.hourly, "last 24 hours (UTC, hourly)", "%H:00", 4),
        daily=_window(activity.daily, f"last {len(activity.daily.starts)} days (UTC, daily)", "%m-%d", 5),
        recent=recent,
    )


@frozen
class OfferedModel:
    name: str
    target: str
    context: int | None
    max_output: int | None
    prices: tuple[tuple[str, str], ...]  # (class, "$3.00 / M tokens"), the key's markup included


_PRICED = (("input", "input"), ("output", "output"), ("cache_write_5m", "cache write 5m"),
           ("cache_write_1h", "cache write 1h"), ("cache_read", "cache read"), ("web_search", "web search"))


def offered_models(table: RoutingTable, key: KeyInfo) -> tuple[list[OfferedModel], Decimal]:
    """The aliases of the route file this key may use (its own list, else its plan's or team's, else all), and the
    markup its prices include (the key's, else its plan's, else the file's), as admission applies them."""
    policies = table.policies_of(key.plan, key.team)
    allowed = key.models or next((p.models for p in policies if p.models), ())
    markup = markup_for(key.markup, next((p.markup for p in policies if p.markup is not None), None),
                        table.settings.markup)
    factor = 1 + markup / 100
    offered = []
    for name, model in table.models.items():
        if not model.declared or (allowed and name not in allowed):
            continue
        prices: list[tuple[str, str]] = []
        if model.price is not None:
            for field, label in _PRICED:
                amount = getattr(model.price, field)
                if amount is None:
                    continue
                unit = "1k searches" if field == "web_search" else "M tokens"
                prices.append((label, f"{_dollars(amount * factor)} / {unit}"))
        offered.append(OfferedModel(name, f"{model.provider}/{model.model}", model.context, model.max_output,
                                    tuple(prices)))
    return offered, markup


def _dollars(amount: Decimal) -> str:
    """A price per million tokens: cents always, more digits only when there are."""
    text = f"{amount.normalize():f}"
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"

