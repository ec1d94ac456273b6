"""The service's state as the pages show it: plain values, no secrets, built per request from what is live.

    provider_rows(runtime, records)   each provider: type, URL (or `env(NAME)`), key as `env(NAME)`, configured or
                                      the unset variable, breaker state, in flight, recent errors
    rule_rows(table) / model_rows(table)   the compiled table made readable
    record_row(record)                one finished request for the live feed (a `RequestRecord` holds no secrets)
    explain(table, text, headers)     `ccm explain` on a pasted body
    history_rows(reloader, saves)     every reload, the admin page's own saves attributed to it
    capture_view(status, proposed)    request capture's switch: on or off, its folder, files and size against bounds

Values that come from the environment are shown as the table serialises them (`env(NAME)`), never resolved. A URL
written literally is shown without any user:password part.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ccm.compile.route_tests import split_capture
from ccm.core.record import RequestRecord
from ccm.core.reload import ReloadEvent
from ccm.core.runtime import Runtime
from ccm.explain import explanation_json, model_text, request_facts
from ccm.frozen import frozen
from ccm.route import NoRouteError, RequestView, select_route
from ccm.table import EnvRef, FileRef, Literal_, RoutingTable, Value
from ccm.web.edits import KEEP_LITERAL_KEY, KEEP_URL

RECENT_ERRORS = 3


def shown_value(value: Value | None) -> str:
    if value is None:
        return ""
    if isinstance(value, EnvRef):
        return f"env({value.name})"  # the default too may be a secret: only the variable's name is shown
    if isinstance(value, FileRef):
        return f"file({value.path})"
    return _without_userinfo(value.value)


def _without_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, "[redacted]@" + netloc, parts.path, parts.query, parts.fragment))


def url_text(value: Value) -> str:
    """The URL as the provider form edits it: `env("NAME", "default")` as written, or the literal URL."""
    if isinstance(value, EnvRef):
        default = f", {orjson.dumps(value.default).decode()}" if value.default is not None else ""
        return f'env("{value.name}"{default})'
    if isinstance(value, FileRef):  # a URL is never a file's (the compiler refuses it); typed for completeness
        return KEEP_URL
    return value.value if _without_userinfo(value.value) == value.value else KEEP_URL


def key_text(value: Value | None) -> str:
    if value is None:
        return "none (the client's own key passes through)"
    if isinstance(value, Literal_):
        return "a literal key (redacted)"
    if isinstance(value, FileRef):
        return f"file({value.path})"
    return f"env({value.name})"


@frozen
class ProviderRow:
    name: str
    type: str
    url: str
    key: str
    key_variable: str  # for the form: the variable's name, or "" (none) or the keep-literal marker
    url_form: str
    missing: str | None
    state: str
    in_flight: int
    failures: int
    errors: tuple[str, ...]


def provider_rows(runtime: Runtime, records: Sequence[RequestRecord]) -> list[ProviderRow]:
    errors: dict[str, list[str]] = {}
    for record in reversed(records):
        for attempt in record.attempts:
            if attempt.reason is not None:
                found = errors.setdefault(attempt.provider, [])
                if len(found) < RECENT_ERRORS:
                    when = record.started_at
                    found.append(f"{_clock(when)} {attempt.upstream_model}: {attempt.reason} ({attempt.status})")
    rows = []
    for name, provider_runtime in runtime.providers.items():
        provider = provider_runtime.provider
        snapshot = provider_runtime.deployments.snapshot()
        key = provider.key
        variable = "" if key is None else key.name if isinstance(key, EnvRef) else KEEP_LITERAL_KEY
        rows.append(ProviderRow(
            name=name, type=provider.type, url=shown_value(provider.url), key=key_text(key), key_variable=variable,
            url_form=url_text(provider.url), missing=provider_runtime.endpoint.missing,
            state=str(snapshot["state"]), in_flight=int(snapshot["in_flight"]),
            failures=int(snapshot.get("consecutive_failures", 0)), errors=tuple(errors.get(name, ())),
        ))
    return rows


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


@frozen
class RuleRow:
    number: int
    source: str
    target: str
    chain: tuple[str, ...]
    where: str


def rule_rows(table: RoutingTable) -> list[RuleRow]:
    rows = []
    for number, rule in enumerate(table.rules, 1):
        chain: tuple[str, ...] = ()
        if rule.target is None:
            target = "the model the request names"
        else:
            model = table.models[rule.target]
            target = model_text(model)
            chain = tuple(model_text(table.models[n]) if n in table.models else n
                          for n in table.fallbacks.get(rule.target, ()))
        where = str(rule.span) if rule.span is not None else "inserted (direct is on)"
        rows.append(RuleRow(number, rule.source, target, chain, where))
    return rows


@frozen
class ModelRow:
    name: str
    deployments: tuple[str, ...]
    context: int | None
    max_output: int | None
    price: str
    quirks: tuple[str, ...]
    force: str
    drop: tuple[str, ...]
    fallbacks: tuple[str, ...]
    balance: str
    form: dict[str, str]


def model_rows(table: RoutingTable) -> list[ModelRow]:
    rows = []
    for name, model in table.models.items():
        if not model.declared:
            continue
        deployments = tuple(f"{d.provider}/{d.model}" + (f" weight {d.weight}" if d.weight != 1 else "")
                            for d in model.deployments) or (f"{model.provider}/{model.model}",)
        price = model.price
        classes = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search")
        amounts = {c: getattr(price, c) if price is not None else None for c in classes}
        price_text = " · ".join(f"{c.replace('_', ' ')} {_decimal(amounts[c])}" for c in classes
                                if amounts[c] is not None)
        form = {"name": name, "target": f"{model.provider}/{model.model}",
                "context": _tokens(model.context), "max_output": _tokens(model.max_output)}
        for c in classes:
            field = f"price_{c}" if c in ("input", "output") else c
            form[field] = "" if amounts[c] is None else _decimal(amounts[c])
        force = ", ".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in model.force)
        rows.append(ModelRow(name, deployments, model.context, model.max_output, price_text, tuple(model.quirks),
                             force, tuple(model.drop), tuple(table.fallbacks.get(name, ())), model.balance, form))
    return rows


def _decimal(value: Any) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _tokens(value: int | None) -> str:
    if value is None:
        return ""
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def record_row(record: RequestRecord) -> dict[str, Any]:
    usage = record.usage
    return {
        "id": record.request_id,
        "time": _clock(record.started_at),
        "method": record.method,
        "path": record.path,
        "model": record.requested_model or "",
        "rule": "" if record.rule is None else f"{(record.rule_index or 0) + 1}: {record.rule}",
        "target": record.target or "",
        "status": record.status,
        "latency": f"{record.latency_ms:,.0f} ms",
        "tokens": "" if usage is None else f"{usage.prompt_tokens:,} / {usage.output:,}",
        "attempts": len(record.attempts),
        "error": record.error or "",
    }


def explain(table: RoutingTable, text: str, header_lines: str) -> dict[str, Any]:
    """`ccm explain` on a pasted body: {"result": …} or {"error": message}."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        return {"error": f"the request is not valid JSON: {error}"}
    problems: list[str] = []
    split = split_capture(data, problems.append)
    if split is None:
        return {"error": problems[0]}
    body, headers = split
    for line in header_lines.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip().lower()] = value.strip()
    try:
        decision = select_route(table, body, headers)
    except NoRouteError as error:
        return {"error": str(error)}
    facts = request_facts(table, RequestView(body, headers, None))
    result = explanation_json(decision, facts)
    result["target_text"] = model_text(decision.target)
    result["fallback_text"] = [model_text(m) for m in decision.chain[1:]]
    return {"result": result}


# --- history ----------------------------------------------------------------------------------------------------


@frozen
class AdminSave:
    """A save made on the admin page: when, the table version its check compiled, the file version written."""

    at: float
    table_version: str
    file_version: str
    who: str


@frozen
class HistoryRow:
    at: float
    source: str
    trigger: str
    ok: bool
    version: str
    summary: str


def source_of(trigger: str) -> str:
    if trigger == "SIGHUP":
        return "SIGHUP"
    if trigger.startswith("save of"):
        return "file save"
    return trigger


def history_rows(events: Iterable[ReloadEvent], saves: Sequence[AdminSave]) -> list[HistoryRow]:
    """Newest first. A reload whose table is the one an admin-page save compiled, at or after that save, is that
    save's: the page checked the same bytes under the same name, so the versions are equal exactly then."""
    rows = []
    claimed: set[int] = set()
    for event in events:
        source = source_of(event.trigger)
        if event.trigger.startswith("save of") and event.ok:
            for index, save in enumerate(saves):
                if index not in claimed and save.table_version == event.version and event.at >= save.at - 1:
                    claimed.add(index)
                    source = "admin page"
                    break
        rows.append(HistoryRow(event.at, source, event.trigger, event.ok, event.version, event.summary))
    return list(reversed(rows))



@frozen
class CaptureView:
    active: bool
    directory: str | None  # the folder of the latest capture (running or not)
    folder: str  # what the start form proposes: the folder typed last, else the latest capture's, else the default
    files: int
    max_files: int
    size: str
    max_size: str
    captured: int
    dropped: int
    failed: int
    error: str | None


def capture_view(status: Mapping[str, Any], proposed: str, typed: str | None = None,
                 error: str | None = None) -> CaptureView:
    """`status` is `Capture.status()`; `typed` and `error`: a start form refused, shown again with why."""
    directory = status["directory"]
    return CaptureView(
        active=status["active"], directory=directory,
        folder=typed if typed is not None else directory or proposed,
        files=status["files"], max_files=status["max_files"], size=_megabytes(status["bytes"]),
        max_size=_megabytes(status["max_bytes"]), captured=status["captured"], dropped=status["dropped"],
        failed=status["failed"], error=error,
    )


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):,.1f} MB"
