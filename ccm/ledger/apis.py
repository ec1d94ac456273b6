"""Other APIs' shapes over the ledger, as pure functions returning dicts (the server mounts them):

- Anthropic's Admin API `GET /v1/organizations/usage_report/messages` and `GET /v1/organizations/cost_report`
  (buckets, `group_by[]`, an opaque `page` cursor, `starting_at`/`ending_at`; cost amounts as decimal strings in
  cents), so tools written for Anthropic's usage API read ccm's by changing the base URL;
- OpenRouter's `GET /api/v1/key` (`label`, `limit`, `usage`, `limit_remaining`, `limit_reset`, `usage_daily`…), so
  a key can read its own balance and limits.

Query parameters arrive as a mapping of name to every value given (`group_by[]` may repeat). Bad parameters raise
`BadInput` (the server answers 400 with its message). Dollar amounts are `Decimal`: `json_bytes` writes them as
JSON numbers exactly.

The cost report's amounts are the *charged* cost (what the key holder pays, markup included); a cost report grouped
by `description` sums each class's own rounded charge, so its lines may differ from the ungrouped total by under a
nano-dollar per request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from ccm.ledger.admission import period_spent
from ccm.ledger.errors import BadInput
from ccm.ledger.money import Money, cents, to_decimal
from ccm.ledger.records import Account, KeyInfo
from ccm.ledger.reports import COUNTS
from ccm.ledger.store.base import Op, Q, Store
from ccm.ledger.times import DAY, HOUR, MINUTE, Micros, iso, parse_instant, period_start

Params = Mapping[str, Sequence[str]]

BUCKETS = {"1m": (MINUTE, 60, 1440), "1h": (HOUR, 24, 168), "1d": (DAY, 7, 31)}  # width, default limit, max
USAGE_GROUPS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo", "speed",
                "account_id", "service_account_id")
COST_GROUPS = ("workspace_id", "description")
_TOKEN_TYPES = {
    "input": ("uncached_input_tokens", "Input Tokens"),
    "output": ("output_tokens", "Output Tokens"),
    "cache_write_5m": ("cache_creation.ephemeral_5m_input_tokens", "Input Tokens, Cache Write 5m"),
    "cache_write_1h": ("cache_creation.ephemeral_1h_input_tokens", "Input Tokens, Cache Write 1h"),
    "cache_read": ("cache_read_input_tokens", "Input Tokens, Cache Read"),
}


def _one(params: Params, name: str) -> str | None:
    values = params.get(name) or ()
    if len(values) > 1:
        raise BadInput(f"`{name}` is given {len(values)} times", "give it once")
    return values[0] if values else None


def _many(params: Params, name: str) -> list[str]:
    return [v for v in list(params.get(name) or ()) + list(params.get(name.removesuffix("[]")) or ()) if v]


def _cursor(page: str | None) -> Micros | None:
    if page is None:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(page.encode() + b"=" * (-len(page) % 4)))
        at = data["at"]
        if not isinstance(at, int):
            raise ValueError
        return at
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadInput("`page` is not a cursor this server gave", "pass the `next_page` of the last answer") from None


def _next_page(at: Micros) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"at": at})).decode().rstrip("=")


def _buckets(params: Params, clock: Any, *, widths: tuple[str, ...]) -> tuple[Micros, list[Micros], bool, Micros]:
    """The width and the bucket starts of this page, whether more follow, and where the range ends."""
    width_name = _one(params, "bucket_width") or "1d"
    if width_name not in widths:
        raise BadInput(f"`bucket_width` `{width_name}` is not one of {', '.join(widths)}")
    width, default_limit, max_limit = BUCKETS[width_name]
    raw_limit = _one(params, "limit")
    if raw_limit is None:
        limit = default_limit
    elif not raw_limit.isdigit() or not 1 <= int(raw_limit) <= max_limit:
        raise BadInput(f"`limit` must be a whole number from 1 to {max_limit} for {width_name} buckets")
    else:
        limit = int(raw_limit)
    start_text = _one(params, "starting_at")
    if start_text is None:
        raise BadInput("`starting_at` is required", "an RFC 3339 time, e.g. 2026-05-01T00:00:00Z")
    starting = parse_instant(start_text, clock) // width * width  # snapped to the bucket's start
    end_text = _one(params, "ending_at")
    ending = parse_instant(end_text, clock) if end_text is not None else None
    if ending is not None and ending <= starting:
        raise BadInput("`ending_at` must be after `starting_at`")
    start = _cursor(_one(params, "page")) or starting
    last = ending if ending is not None else -(-clock() // width) * width  # to now, in whole buckets
    starts = [start + i * width for i in range(limit) if start + i * width < last]
    more = bool(starts) and starts[-1] + width < last
    return width, starts, more, last


def _groups(params: Params, allowed: tuple[str, ...]) -> list[str]:
    groups = _many(params, "group_by[]")
    for group in groups:
        if group not in allowed:
            raise BadInput(f"cannot group by `{group}`", f"group_by[] takes: {', '.join(allowed)}")
    return list(dict.fromkeys(groups))


def _key_names() -> Op[dict[int, str]]:
    rows = yield Q("SELECT id, name FROM keys")
    return {r[0]: r[1] for r in rows}


def _usage_rows(width: Micros, low: Micros, high: Micros, keys: list[int] | None,
                models: list[str] | None) -> Op[list[tuple[Any, ...]]]:
    """(bucket start, key id, model, sums of the six counts), from the rollups for daily buckets."""
    filters, params = "", list[Any]([low, high])
    if keys is not None:
        filters += f" AND key_id IN ({', '.join('?' * len(keys))})" if keys else " AND 1 = 0"
        params += keys
    if models is not None:
        filters += f" AND model IN ({', '.join('?' * len(models))})" if models else " AND 1 = 0"
        params += models
    sums = ", ".join(f"SUM({c})" for c in COUNTS)
    if width == DAY:
        rows = yield Q(f"SELECT day * {DAY}, key_id, model, {sums} FROM rollup_daily WHERE day >= ? / {DAY} "
                       f"AND day < ? / {DAY}{filters} GROUP BY day, key_id, model", params)
    else:
        filters = filters.replace("key_id IN", "COALESCE(key_id, 0) IN").replace("model IN", "COALESCE(model, '') IN")
        rows = yield Q(f"SELECT ts / {width} * {width}, COALESCE(key_id, 0), COALESCE(model, ''), {sums} FROM usage "
                       f"WHERE ts >= ? AND ts < ?{filters} GROUP BY ts / {width}, COALESCE(key_id, 0), "
                       f"COALESCE(model, '')", params)
    return rows


async def messages_usage_report(store: Store, params: Params, clock: Any) -> dict[str, Any]:
    """`GET /v1/organizations/usage_report/messages`. `api_key_id` is the ccm key's name (None: the local caller)."""
    width, starts, more, last = _buckets(params, clock, widths=("1m", "1h", "1d"))
    groups = _groups(params, USAGE_GROUPS)
    key_filter = _many(params, "api_key_ids[]")
    model_filter = _many(params, "models[]") or None

    def work() -> Op[tuple[list[tuple[Any, ...]], dict[int, str]]]:
        names = yield from _key_names()
        ids = None if not key_filter else [i for i, n in names.items() if n in key_filter]
        if not starts:
            return [], names
        rows = yield from _usage_rows(width, starts[0], starts[-1] + width, ids, model_filter)
        return rows, names

    rows, names = await store.run(work(), write=False)
    buckets: dict[Micros, dict[tuple[Any, ...], list[int]]] = {start: {} for start in starts}
    for start, key_id, model, *sums in rows:
        group = tuple(
            (names.get(int(key_id)) if int(key_id) else None) if g == "api_key_id" else (model or None)
            if g == "model" else None for g in groups)
        totals = buckets.setdefault(int(start), {}).setdefault(group, [0] * len(COUNTS))
        for i, value in enumerate(sums):
            totals[i] += int(value or 0)
    data = []
    for start in starts:
        results = []
        for group, (inp, out, five, hour, read, search) in sorted(buckets[start].items(), key=lambda i: str(i[0])):
            result: dict[str, Any] = {
                "uncached_input_tokens": inp,
                "cache_creation": {"ephemeral_1h_input_tokens": hour, "ephemeral_5m_input_tokens": five},
                "cache_read_input_tokens": read,
                "output_tokens": out,
                "server_tool_use": {"web_search_requests": search},
            }
            for name in USAGE_GROUPS:
                result[name] = group[groups.index(name)] if name in groups else None
            results.append(result)
        data.append({"starting_at": iso(start), "ending_at": iso(start + width), "results": results})
    return {"data": data, "has_more": more, "next_page": _next_page(starts[-1] + width) if more else None}


async def cost_report(store: Store, params: Params, clock: Any) -> dict[str, Any]:
    """`GET /v1/organizations/cost_report`: daily buckets of charged cost, in cents as decimal strings."""
    width, starts, more, last = _buckets(params, clock, widths=("1d",))
    groups = _groups(params, COST_GROUPS)
    by_description = "description" in groups

    def work() -> Op[list[tuple[Any, ...]]]:
        if not starts:
            return []
        classes = ", ".join(f"SUM(c_{c})" for c in COUNTS)
        rows = yield Q(f"SELECT day * {DAY}, model, SUM(charged), {classes} FROM rollup_daily "
                       f"WHERE day >= ? AND day < ? GROUP BY day, model",
                       [starts[0] // DAY, (starts[-1] + width) // DAY])
        return rows

    rows = await store.run(work(), write=False)
    per_bucket: dict[Micros, list[dict[str, Any]]] = {start: [] for start in starts}
    totals: dict[Micros, int] = dict.fromkeys(starts, 0)
    for start, model, charged, *classes in rows:
        start = int(start)
        totals[start] = totals.get(start, 0) + int(charged or 0)
        if not by_description:
            continue
        for name, amount in zip(COUNTS, classes, strict=True):
            if not amount:
                continue
            token_type, label = _TOKEN_TYPES.get(name, (None, "Web Search"))
            per_bucket.setdefault(start, []).append({
                "currency": "USD", "amount": cents(int(amount)),
                "cost_type": "web_search" if name == "web_search" else "tokens",
                "description": f"{model or 'unknown model'} Usage - {label}", "model": model or None,
                "token_type": token_type, "service_tier": "standard" if token_type else None,
                "context_window": None, "workspace_id": None, "inference_geo": None,
            })
    data = []
    for start in starts:
        if by_description:
            results = sorted(per_bucket.get(start, []), key=lambda r: r["description"])
        else:
            results = [{"currency": "USD", "amount": cents(totals.get(start, 0)), "cost_type": None,
                        "description": None, "model": None, "token_type": None, "service_tier": None,
                        "context_window": None, "workspace_id": None, "inference_geo": None}]
        data.append({"starting_at": iso(start), "ending_at": iso(start + width), "results": results})
    return {"data": data, "has_more": more, "next_page": _next_page(starts[-1] + width) if more else None}


async def openrouter_key(store: Store, key: KeyInfo, account: Account, at: Micros) -> dict[str, Any]:
    """`GET /api/v1/key` for one key: its limit (its budget per period, else its credits; None: no limit), what
    remains of it, and its spend all-time and in this UTC day, week (from Monday) and month. `key` is as admission
    sees it: with its plan's or team's budget and limits where it sets none (`KeyInfo.under`)."""
    day, week, month = (period_start(p, at) // DAY for p in ("day", "week", "month"))

    def work() -> Op[list[tuple[Any, ...]]]:
        rows = yield Q("SELECT day, SUM(charged) FROM rollup_daily WHERE key_id = ? AND day >= ? GROUP BY day",
                       [key.id, min(week, month)])
        return rows

    rows = await store.run(work(), write=False)
    spent = {int(d): int(c or 0) for d, c in rows}

    def charged_since(first_day: int) -> Money:
        return sum(amount for d, amount in spent.items() if d >= first_day)

    def since(first_day: int) -> Decimal:
        return to_decimal(charged_since(first_day))

    limit: Decimal | None = None
    remaining: Decimal | None = None
    if key.budget is not None and key.period is not None:
        inherited = charged_since(period_start(key.period, at) // DAY) if key.budget_inherited else None
        in_period = period_spent(key, account, at, inherited)  # as admission counts it
        limit = to_decimal(key.budget)
        remaining = to_decimal(max(key.budget - in_period - account.held, 0))
        if key.credits:
            remaining = min(remaining, to_decimal(max(account.balance, 0)))
    elif key.credits:
        limit = to_decimal(account.credited)
        remaining = to_decimal(max(account.balance, 0))
    return {"data": {
        "label": key.name,
        "limit": limit,
        "limit_reset": {"day": "daily", "week": "weekly", "month": "monthly"}.get(key.period or ""),
        "limit_remaining": remaining,
        "include_byok_in_limit": False,
        "usage": to_decimal(account.settled),
        "usage_daily": since(day),
        "usage_weekly": since(week),
        "usage_monthly": since(month),
        "byok_usage": Decimal(0), "byok_usage_daily": Decimal(0), "byok_usage_weekly": Decimal(0),
        "byok_usage_monthly": Decimal(0),
        "is_free_tier": False,
        "expires_at": iso(key.expires_at) if key.expires_at is not None else None,
        "rate_limit": {"requests": key.rpm, "interval": "1m"} if key.rpm is not None else None,
    }}


def json_bytes(value: Any) -> bytes:
    """JSON with `Decimal`s written as exact numbers (orjson would write them as strings)."""
    marker = "\x00ccm-decimal\x00"

    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return f"{marker}{obj:f}{marker}"
        raise TypeError(type(obj).__name__)

    text = orjson.dumps(value, default=default)
    quoted = orjson.dumps(marker)[1:-1]
    return text.replace(b'"' + quoted, b"").replace(quoted + b'"', b"")
