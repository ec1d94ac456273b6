"""`GET /ccm/sessions/{session_id}`: what served a Claude Code session's requests, for `ccm statusline`.

Answered from the service's recent records (`Service.recent`, the last 500 requests): the session's last Messages
request — the rule that matched, the model alias and the deployment that served, its tokens and status — the
requests and tokens of the session among the recent ones, the last request's cost at the route file's price, and
the session's cost from the costs seam (`ccm.costs.Costs.session_cost`: the ledger's, None without one).

    200 {"session_id", "requests", "tokens": {…}, "last": {…} | null, "session_cost_usd": float | null}

A session with no recent request is a 200 with `"last": null` (the statusline says so), not a 404.

Who may ask, as for the API (`ccm.core.admission.identify`): a request presenting one of the file's inbound keys or
an issued ccm key sees the requests made with that key, and the session's cost to it; the local caller (no key
required) sees the local caller's, from this machine only (a loopback client, and nothing a web page could send);
the admin key (`CCM_ADMIN_KEY`) sees every session, and its cost to everyone.

Under `ccm run --workers N` each worker knows the requests it served, so `requests`, `tokens` and `last` are the
answering worker's view; the session's cost is the ledger's, which every worker shares.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from ccm.core.admission import admit_page, identify, presents
from ccm.core.metering import Metering
from ccm.core.record import LOCAL, RecentRecords, RequestRecord
from ccm.core.runtime import RuntimeHolder
from ccm.core.types import Receive, Scope, Send
from ccm.costs import Costs
from ccm.errors import ApiError

PREFIX = "/sessions/"  # under the /ccm mount
MAX_SESSION_ID = 128


class SessionsApp:
    def __init__(self, holder: RuntimeHolder, recent: RecentRecords, costs: Costs, admin_key: str | None = None,
                 metering: Callable[[], Metering | None] = lambda: None) -> None:
        self._metering = metering  # the API's, once the ledger is open: who an issued key is
        self._holder = holder
        self._recent = recent
        self._costs = costs
        self._admin_key = admin_key.encode() if admin_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            path: str = scope["path"]
            if not path.startswith(PREFIX) or "/" in path[len(PREFIX):]:
                raise ApiError(404, f"Not found: {scope['method']} {scope.get('root_path', '')}{path}",
                               "not_found_error")
            if scope["method"] != "GET":
                raise ApiError(405, "use GET", headers=(("allow", "GET"),))
            session_id = path[len(PREFIX):]
            if not 0 < len(session_id) <= MAX_SESSION_ID:
                raise ApiError(400, "invalid session id")
            body = orjson.dumps(await self.describe(session_id, scope, headers))
            status = 200
        except ApiError as error:
            body, status = error.body(), error.status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def describe(self, session_id: str, scope: Scope, headers: dict[str, str]) -> dict[str, Any]:
        records = self._recent.snapshot(session_id)
        if self._admin_key is not None and presents(headers, (self._admin_key,)):
            caller = None  # the admin sees every session
        else:
            caller, _ = await identify(self._holder.current, headers, self._metering())
            if caller is LOCAL:
                admit_page(scope, headers, None)
            records = [r for r in records if r.caller == caller]
        messages = [r for r in records if r.path == "/v1/messages"]
        tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
        for record in messages:
            if record.usage is not None:
                tokens["input"] += record.usage.input
                tokens["output"] += record.usage.output
                tokens["cache_read"] += record.usage.cache_read
                tokens["cache_write"] += record.usage.cache_write_5m + record.usage.cache_write_1h
        session_cost = await self._costs.session_cost(session_id, caller)
        return {
            "session_id": session_id,
            "requests": len(messages),
            "tokens": tokens,
            "last": self._last(messages[-1]) if messages else None,
            "session_cost_usd": _usd(session_cost),
        }

    def _last(self, record: RequestRecord) -> dict[str, Any]:
        answered = record.attempts[-1] if record.attempts else None
        usage = record.usage
        return {
            "request_id": record.request_id,
            "at": record.started_at,
            "rule": record.rule,
            "model": record.model,
            "target": record.target,
            "provider": answered.provider if answered is not None else None,
            "upstream_model": answered.upstream_model if answered is not None else None,
            "requested_model": record.requested_model,
            "status": record.status,
            "outcome": record.outcome,
            "error": record.error,
            "attempts": len(record.attempts),
            "stream": record.stream,
            "latency_ms": round(record.latency_ms, 1),
            "usage": None if usage is None else {
                "input_tokens": usage.input, "output_tokens": usage.output,
                "cache_read_input_tokens": usage.cache_read,
                "cache_creation_input_tokens": usage.cache_write_5m + usage.cache_write_1h,
            },
            "usage_estimated": record.usage_estimated,
            "cost_usd": _usd(self._costs.request_cost(record)),
        }


def _usd(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)
