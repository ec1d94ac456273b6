"""The API app: Claude Code's side of ccm, and the hot path. A plain ASGI app (no framework on the request path).

    POST /v1/messages               route, dispatch, answer (JSON or a relayed SSE stream); the query is ignored
    POST /v1/messages/count_tokens  `{"input_tokens": N}`, counted locally or forwarded to an Anthropic provider
    GET  /v1/models[/{id}]          the table's declared aliases, in Anthropic's list shape
    GET  /health                    liveness and the table version, open without auth; the detail (providers,
                                    breakers, reload) too unless an admin key is set, then only with it
    anything else                   Anthropic-shaped 404; a known path with the wrong method: 405

Every request reads `holder.current` once and keeps that runtime to the end, so a reload never changes a request
midway; it is counted under the reload epoch it arrived in (`InFlight`), so the providers a reload retired are
closed only once the requests that may use them are done.

Before anything else: with no inbound key required (the loopback set-up), a request must look like it comes from
this machine and not from a web page (`ccm.core.admission.same_machine`: a loopback Host, no foreign Origin, no
cross-site fetch, JSON on the API), so that neither a page the user visits nor a DNS-rebinding one can spend the user's
keys.

Failures are Anthropic error bodies with the right status (`ApiError`); an unexpected exception becomes a 500
`api_error` "internal error" with the traceback logged, never sent. A stream's 200 is followed by the relay
(`ccm.core.relay.StreamRelay`); after it, a failure is an `event: error` frame.

While the upstream is being asked, a task watches for `http.disconnect`: a client that leaves cancels the upstream
request, unless the stream's relay takes it over (to read the upstream on to its final usage). Each request ends in
one `RequestRecord`, built once from what the request saw, handed to `Records` (`ccm.core.record`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import orjson

from ccm.core.admission import identify, presents, same_machine
from ccm.core.dispatch import Answer, DispatchFailed, Request, dispatch
from ccm.core.inflight import InFlight
from ccm.core.metering import AdmissionRequest, Admitted, Metering
from ccm.core.record import LOCAL, Attempt, Caller, Outcome, Records, RequestRecord, log_request
from ccm.core.relay import NO_DRAINS, Drains, Relayed, StreamRelay
from ccm.core.runtime import Runtime, RuntimeHolder, target_name
from ccm.core.types import Message, Receive, Scope, Send
from ccm.errors import ApiError
from ccm.messages_request import parse_request
from ccm.providers.base import Call, Reply
from ccm.route import Decision, NoRouteError, select_route, strip_subagent_tag
from ccm.table import Model, Standing
from ccm.upstream.errors import located
from ccm.usage import TokenUsage

log = logging.getLogger("ccm.core")

TokenCount = Callable[[Mapping[str, Any]], int]
# Called with each parsed Messages or count_tokens request (request id, path, raw body, headers) when set: request
# capture (`ccm.capture`) sets it while it runs; None costs the request nothing.
RequestHook = Callable[[str, str, bytes, Mapping[str, str]], None]
Handler = Callable[["Exchange", Runtime, dict[str, str]], Awaitable[None]]

JSON = (b"content-type", b"application/json")
CLIENT_CLOSED = 499  # the status logged for a request whose client left before any answer (nginx's convention)
# A body over the limit is read on (and thrown away) up to this much more, within this long, before the 413 goes out,
# so an ordinary client that is still sending reads the answer instead of a broken pipe (nginx's lingering close).
DISCARD_BYTES = 64 * 1024 * 1024
DISCARD_SECONDS = 10.0
# A body up to this size is counted on the event loop (the per-piece cache makes Claude Code's repeated ~50 KB
# prompts cheap); a larger one on a worker thread.
ON_LOOP_COUNT_BYTES = 512 * 1024
# What a stream cut short is estimated to have produced: a token per this many characters of content it streamed.
CHARS_PER_TOKEN = 4
# A client model name longer than this, or with anything but printable ASCII, is refused before any upstream call.
MAX_MODEL_NAME = 256


class ClientDisconnected(Exception):
    """The client went away before its request was answered."""


class Exchange:
    """One request/response: what has been sent so far decides how a failure can still be reported, and what the
    request learnt on its way (caller, decision, answer, relay) is what its record is built from at the end."""

    __slots__ = ("receive", "send", "method", "path", "query", "began", "started_at", "request_id", "status", "started",
                 "complete", "first_byte_at", "disconnected", "on_disconnect", "caller", "carrier", "requested_model",
                 "session_id", "stream", "input_tokens", "decision", "answer", "attempts", "relayed", "error_type",
                 "close_connection", "admitted", "settled", "record")

    def __init__(self, receive: Receive, send: Send, method: str, path: str) -> None:
        self.receive = receive
        self.send = send
        self.method = method
        self.path = path
        self.query = ""
        self.began = time.perf_counter()
        self.started_at = time.time()
        self.request_id = _request_id(self.started_at)
        self.status = 500
        self.started = False  # http.response.start sent
        self.complete = False  # the final body message sent
        self.first_byte_at: float | None = None
        self.disconnected = False
        # the relay, while a stream is relayed: True when it takes the client's leaving over (see StreamRelay)
        self.on_disconnect: Callable[[], bool] | None = None
        self.caller: Caller = LOCAL
        self.carrier: str | None = None  # the header that held ccm's own credential: never sent upstream
        self.requested_model: str | None = None
        self.session_id: str | None = None
        self.stream = False
        self.input_tokens: int | None = None  # the local count, when one was made
        self.decision: Decision | None = None
        self.answer: Answer | None = None
        self.attempts: tuple[Attempt, ...] = ()  # those of a request no model answered
        self.relayed: Relayed | None = None
        self.error_type: str | None = None
        self.close_connection = False
        self.admitted: Admitted | None = None  # what metering admitted; settled once (`App._settle`)
        self.settled = False
        self.record: RequestRecord | None = None  # the one to publish, built as a whole answer went out

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self.status = status
        if self.close_connection:
            headers = [*headers, (b"connection", b"close")]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        if not more:
            self.complete = True
        if self.first_byte_at is None and data:
            self.first_byte_at = time.perf_counter()
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await self.start(status, [*headers, (b"content-length", str(len(body)).encode())])
        await self.body(body)

    async def fail(self, error: ApiError) -> None:
        self.error_type = error.error_type
        if self.complete:
            return
        if self.started:  # the stream's 200 is out: the error travels in-band, and the stream ends cleanly
            await self.body(error.event(), more=True)
            await self.body(b"")
            return
        headers = [JSON, (b"request-id", self.request_id.encode())]
        headers += [(name.encode(), value.encode()) for name, value in error.headers]
        if self.attempts:
            headers.append((b"x-ccm-attempts", str(len(self.attempts)).encode()))
        await self.respond(error.status, error.body(), headers)


class App:
    def __init__(
        self,
        holder: RuntimeHolder,
        *,
        records: Records | None = None,
        in_flight: InFlight | None = None,
        count_tokens: TokenCount | None = None,
        admin_key: str | None = None,
        drains: Drains = NO_DRAINS,
        metering: Metering | None = None,
    ) -> None:
        self.holder = holder
        self.records = records if records is not None else Records((log_request,))
        self.in_flight = in_flight if in_flight is not None else InFlight()
        self._counts_locally = count_tokens is None
        self._encoding_loaded = False
        self._encoding_lock: anyio.Lock | None = None  # created inside the event loop, on first use
        if count_tokens is None:
            from ccm.tokens import TokenCounter

            count_tokens = TokenCounter().count
        self.count_tokens = count_tokens
        self._admin_key = admin_key.encode() if admin_key else None
        self.drains = drains
        self.metering = metering
        # more top-level /health fields, each rendered per /health request (the service adds `reload`)
        self.health_sections: dict[str, Callable[[], Any]] = {}
        # fields every /health answer carries, the short one too: which router this is (the service sets them)
        self.identity: dict[str, str] = {}
        # what else makes this router `degraded` on /health: each gives a reason, or None (the service adds the
        # reloader's: the last save was rejected)
        self.degraded_checks: list[Callable[[], str | None]] = []
        self.on_request: RequestHook | None = None
        self._routes: dict[str, tuple[str, Handler]] = {
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/models": ("GET", self._models),
            "/health": ("GET", self._health),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # the service's lifespan is not the API's (ccm.service)
        path: str = scope["path"]
        exchange = Exchange(receive, send, scope["method"], path)
        exchange.query = scope.get("query_string", b"").decode("latin-1")
        runtime = self.holder.current
        epoch = self.in_flight.enter()  # the runtime's epoch: no reload can come between (no await since)
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            handler = self._handler(path, scope["method"])
            if not runtime.auth_required:
                same_machine(headers, scope["method"])
            if path != "/health":
                exchange.caller, exchange.carrier = await identify(runtime, headers, self.metering)
            await handler(exchange, runtime, headers)
        except DispatchFailed as error:
            exchange.attempts = error.attempts
            await exchange.fail(error)
        except ApiError as error:
            await exchange.fail(error)
        except ClientDisconnected:
            exchange.disconnected = True
        except Exception:  # noqa: BLE001 - the one place an unexpected failure is turned into a 500
            log.exception("internal error on %s %s", scope["method"], path.encode("unicode_escape").decode())
            try:
                await exchange.fail(ApiError(500, "internal error", "api_error"))
            except Exception:  # noqa: BLE001 - the client is gone; nothing left to tell it
                exchange.disconnected = True
        finally:
            try:
                record = exchange.record or _record(exchange, runtime)
                if exchange.admitted is not None and not exchange.settled:  # failed, cut or cancelled: settle now
                    with anyio.CancelScope(shield=True):
                        await _settle(exchange, record)
                self.records.publish(record)
            finally:
                self.in_flight.leave(epoch)

    def _handler(self, path: str, method: str) -> Handler:
        route = self._routes.get(path)
        if route is None and path.startswith("/v1/models/"):
            route = ("GET", self._model)
        if route is None and self.metering is not None and path in self.metering.reports:
            route = ("GET", self._report)
        if route is None:
            raise ApiError(404, f"Not found: {method} {path}", "not_found_error")
        allowed, handler = route
        if method != allowed:
            raise ApiError(405, f"Method {method} not allowed on {path} (use {allowed})", headers=(("allow", allowed),))
        return handler

    # --- endpoints -------------------------------------------------------------------------------------------------

    async def _health(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        reasons = [*runtime.health.get("reasons", ()), *filter(None, (check() for check in self.degraded_checks))]
        status = "degraded" if reasons else "ok"
        if self._admin_key is not None and not presents(headers, (self._admin_key,)):
            body = orjson.dumps({"status": status, "version": runtime.table.version, **self.identity})
        else:
            # breaker state and in-flight counts change between requests, so they are rendered here
            breakers = {name: p.deployments.snapshot() for name, p in runtime.providers.items()}
            sections = {name: section() for name, section in self.health_sections.items()}
            health = {**runtime.health, "status": status, **({"reasons": reasons} if reasons else {})}
            body = orjson.dumps({**health, **self.identity, "breakers": breakers, **sections})
        await exchange.respond(200, body, [JSON])

    async def _report(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        assert self.metering is not None
        admin = (presents(headers, (self._admin_key,)) if self._admin_key is not None
                 else exchange.caller.kind != "key")  # no admin key: whoever may use this ccm at all
        query = urllib.parse.parse_qs(exchange.query, keep_blank_values=True)
        body = await self.metering.reports[exchange.path](exchange.caller, query, admin)
        await exchange.respond(200, body, [JSON])

    async def _models(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        await exchange.respond(200, runtime.models_body, [JSON])

    async def _model(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        name = exchange.path.removeprefix("/v1/models/")
        body = runtime.model_bodies.get(name)
        if body is None:
            raise ApiError(404, f"model {name!r} is not declared in the route file", "not_found_error")
        await exchange.respond(200, body, [JSON])

    async def _count_tokens(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        raw = await _read_body(exchange, runtime.table.settings.body_limit, headers)
        body = parse_request(raw, count_only=True)
        if self.on_request is not None:
            self.on_request(exchange.request_id, exchange.path, raw, headers)
        exchange.requested_model = _checked_model_name(body.get("model"))  # the request line names it
        forward_to = runtime.table.settings.count_tokens
        if forward_to is not None:
            reply = await self._forward_count(runtime, forward_to, body, raw,
                                              _upstream_headers(headers, exchange.carrier))
            if reply is not None:
                await exchange.respond(reply.status, reply.body or b"", _reply_headers(exchange, reply))
                return
        count = await self._count(body, len(raw))
        await exchange.respond(200, orjson.dumps({"input_tokens": count}), [JSON])

    async def _count(self, body: Mapping[str, Any], size: int) -> int:
        """The local count of a parsed body of `size` bytes. A large body is counted on a worker thread (by a counter
        of its own: the shared one's cache is the event loop's), so the loop keeps serving; one too large to tokenize
        at all is estimated from its size."""
        if not self._counts_locally:
            return self.count_tokens(body)
        from ccm.tokens import MAX_COUNTED_BYTES, TokenCounter, estimated_tokens

        if size > MAX_COUNTED_BYTES:
            return estimated_tokens(size)
        await self._encoding_ready()
        if size <= ON_LOOP_COUNT_BYTES:
            return self.count_tokens(body)
        return await anyio.to_thread.run_sync(TokenCounter(max_entries=0).count, body)

    async def _standing(self, caller: Caller, runtime: Runtime) -> Standing | None:
        """The caller as rules read it: an issued key's name, plan and team, and (only when a rule reads them)
        what is left of its budget and what it spent."""
        if caller.kind != "key":
            return None
        if self.metering is not None and runtime.table.reads_spend():
            return await self.metering.standing(caller)
        return Standing(key=caller.name, plan=caller.plan, team=caller.team)

    async def _admit(self, exchange: Exchange, body: Mapping[str, Any], raw: bytes) -> None:
        """Metering's admission of a routed request: refused (402, 403, 429, 503) or admitted, with a hold when the
        caller's key has something to check (its input counted for it)."""
        assert self.metering is not None and exchange.decision is not None
        table = self.holder.current.table
        if exchange.caller.kind == "key":
            exchange.input_tokens = await self._count(body, len(raw))
        max_tokens = body.get("max_tokens")
        exchange.admitted = await self.metering.admit(AdmissionRequest(
            exchange.request_id, exchange.caller, exchange.decision.chain, exchange.input_tokens or 0,
            max_tokens if isinstance(max_tokens, int) else 0, table.settings,
            table.policies_of(exchange.caller.plan, exchange.caller.team),
        ))

    async def _request_counter(self, runtime: Runtime, raw: bytes, parsed: Mapping[str, Any]) -> TokenCount:
        """How this request is counted, if routing or dispatch asks: the body's size, when it alone bounds the count
        below every threshold of the table (then each decision is the one the exact count gives, and most requests
        need no tokenizer); else the local counter, its tokenizer loaded on a thread first."""
        floor = runtime.count_floor
        if self._counts_locally and floor is not None:
            from ccm.tokens import token_ceiling

            ceiling = token_ceiling(raw)
            if ceiling is not None and ceiling < floor:
                return lambda body: ceiling
            if len(raw) > ON_LOOP_COUNT_BYTES:  # counted now, off the loop: routing and dispatch read it later
                counted = await self._count(parsed, len(raw))
                return lambda body: counted
            await self._encoding_ready()
        return _count_once(self.count_tokens)

    async def _encoding_ready(self) -> None:
        """The tokenizer, loaded on a worker thread the first time a count needs it (not at startup: ~25 MB of
        idle RSS, and most requests never need it, see `_request_counter`). The event loop keeps serving meanwhile;
        the requests that need it during the load (a `/context` burst) wait for that one load."""
        if self._encoding_loaded:
            return
        if self._encoding_lock is None:
            self._encoding_lock = anyio.Lock()
        async with self._encoding_lock:
            if not self._encoding_loaded:
                import ccm.tokens

                await anyio.to_thread.run_sync(ccm.tokens.load_encoding)
                self._encoding_loaded = True

    async def _forward_count(
        self, runtime: Runtime, provider: str, body: dict[str, Any], raw: bytes, headers: Mapping[str, str]
    ) -> Reply | None:
        """The Anthropic provider's exact count; None when it cannot answer now (then the local count serves:
        an estimate beats an error for Claude Code's context meter). A 4xx is the request's fault and is raised."""
        target = runtime.table.models.get(body.get("model", ""))
        upstream_model = target.model if target is not None and target.provider == provider else body.get("model")
        model = Model.model_construct(name=str(upstream_model), provider=provider, model=str(upstream_model))
        adapter: Any = runtime.providers[provider].adapter
        try:
            reply: Reply = await adapter.count_tokens(Call(body, raw, headers, False, model))
            return reply
        except Exception as exc:  # noqa: BLE001 - the upstream boundary: located (provider named, keys redacted)
            error = located(exc, provider, runtime.redactor)
            if error.reason == "4xx":
                raise error from None
            log.warning("count_tokens via %s failed (%s); counting locally", provider, error.message)
            return None

    async def _messages(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        raw = await _read_body(exchange, runtime.table.settings.body_limit, headers)
        body = parse_request(raw)
        if self.on_request is not None:
            self.on_request(exchange.request_id, exchange.path, raw, headers)
        exchange.requested_model = _checked_model_name(body.get("model"))
        exchange.session_id = _session_id(body)
        count_tokens = await self._request_counter(runtime, raw, body)
        standing = await self._standing(exchange.caller, runtime)
        try:
            decision = select_route(runtime.table, body, headers, count_tokens=count_tokens, caller=standing)
        except NoRouteError as error:
            raise ApiError(500, str(error), "api_error") from None
        exchange.decision = decision
        exact: bytes | None = raw
        if decision.strip_subagent_tag:
            body = strip_subagent_tag(body)
            exact = None  # serialised only by an adapter that forwards bytes (the passthrough), once, with its edits
        exchange.stream = stream = body.get("stream") is True
        if self.metering is not None:
            await self._admit(exchange, body, raw)
        request = Request(body, exact, _upstream_headers(headers, exchange.carrier), stream, exchange.input_tokens)

        async def settle_now(usage: object) -> None:
            await _settle(exchange, _record(exchange, runtime))

        async def answer() -> None:
            exchange.answer = answer = await dispatch(runtime, decision.chain, request, count_tokens=count_tokens)
            try:
                reply = answer.reply
                headers = _reply_headers(exchange, reply, answer)
                if reply.stream is None:
                    # the whole answer goes out now: its record is built as it does, settled before the client has
                    # the answer and, once it went out, published as it is (nothing after that changes what it
                    # says), unless settling waited for the ledger: then the one published counts the wait
                    exchange.status = reply.status
                    record = _record(exchange, runtime, sending=bool(reply.body))
                    waits = exchange.admitted is not None and exchange.admitted.holds
                    await _settle(exchange, record)
                    await exchange.respond(reply.status, reply.body or b"", headers)
                    exchange.record = None if waits else record
                    return
                admitted = exchange.admitted
                relay = StreamRelay(
                    reply, headers, deadline=answer.deadline, write_idle=answer.target.provider.provider.timeouts.idle,
                    breaker=answer.target.state.breaker, provider=answer.target.provider.provider.name,
                    redactor=runtime.redactor,
                    drains=self.drains if admitted is not None and admitted.holds else NO_DRAINS,
                    on_final=settle_now if admitted is not None else None, budget=admitted,
                )
                exchange.on_disconnect = relay.client_left
                exchange.relayed = await relay.run(exchange)
                if exchange.relayed.error is not None:
                    exchange.error_type = exchange.relayed.error.error_type
            finally:
                exchange.on_disconnect = None
                await answer.close()

        await _until_disconnect(exchange, answer)


# --- the record ----------------------------------------------------------------------------------------------------


def _record(exchange: Exchange, runtime: Runtime, *, sending: bool = False) -> RequestRecord:
    """The request's record, from what its exchange saw so far (`sending`: and the whole answer's first byte is
    sent now). The one published is built when the request is over, or as its whole answer went out."""
    began = exchange.began
    now = time.perf_counter()
    first_byte_at = now if sending else exchange.first_byte_at
    decision, answer, relayed = exchange.decision, exchange.answer, exchange.relayed
    attempts = answer.attempts if answer is not None else exchange.attempts
    usage: TokenUsage | None = None
    model = decision.target if decision is not None else None
    estimated = False
    if answer is not None:
        running = answer.reply.usage
        usage = running.billed()
        if not running.final:  # the upstream's last report never came (a stream cut short, a client gone): estimate
            estimated = True
            counted = max((exchange.input_tokens or 0) - usage.prompt_tokens, 0)
            usage = dataclasses.replace(usage, input=usage.input + counted,
                                        output=max(usage.output, -(-running.streamed_chars // CHARS_PER_TOKEN)))
        attempts = (*attempts[:-1], attempts[-1].answered(usage))
        model = answer.model
    status = exchange.status
    client_gone = exchange.disconnected or (relayed is not None and relayed.client_left)
    if exchange.disconnected and not exchange.started:
        status = CLIENT_CLOSED
    truncated = relayed is not None and not relayed.complete
    outcome: Outcome = ("client_closed" if client_gone else "truncated" if truncated
                        else "error" if exchange.error_type is not None else "ok")
    return RequestRecord(
        request_id=exchange.request_id,
        started_at=exchange.started_at,
        method=exchange.method,
        path=exchange.path,
        status=status,
        latency_ms=(now - began) * 1000,
        caller=exchange.caller,
        table_version=runtime.table.version,
        session_id=exchange.session_id,
        requested_model=exchange.requested_model,
        rule=decision.rule.source if decision is not None and decision.rule is not None else None,
        rule_index=decision.rule_index if decision is not None else None,
        model=model.name if model is not None else None,
        target=target_name(model) if model is not None else None,
        price=model.price if model is not None else None,
        attempts=attempts,
        usage=usage,
        usage_estimated=estimated,
        stream=exchange.stream,
        ttfb_ms=(first_byte_at - began) * 1000 if first_byte_at is not None else None,
        error=exchange.error_type,
        truncated=truncated,
        client_disconnected=client_gone,
        outcome=outcome,
    )


# --- request plumbing --------------------------------------------------------------------------------------------


def _count_once(count_tokens: TokenCount) -> TokenCount:
    """`count_tokens` for one request: routing (a `tokens` rule) and dispatch (context fit) share one count of the
    same body instead of walking its ~50 KB twice (the per-piece cache makes a repeat cheap, not free)."""
    counted: tuple[Mapping[str, Any], int] | None = None

    def count(body: Mapping[str, Any]) -> int:
        nonlocal counted
        if counted is None or counted[0] is not body:
            counted = (body, count_tokens(body))
        return counted[1]

    return count


async def _settle(exchange: Exchange, record: RequestRecord) -> None:
    """Hand the request's record to metering, once: for an answer, before its last bytes go out."""
    admitted = exchange.admitted
    if admitted is None or exchange.settled:
        return
    exchange.settled = True
    try:
        await admitted.settle(record)
    except Exception:  # noqa: BLE001 - the answer still goes out; the failure is metering's to report
        log.exception("settling request %s failed", exchange.request_id)


def _upstream_headers(headers: dict[str, str], carrier: str | None) -> Mapping[str, str]:
    """The client's headers as adapters see them: without the one that carried ccm's own credential."""
    if carrier is None:
        return headers
    return {name: value for name, value in headers.items() if name != carrier}


def _checked_model_name(model: Any) -> str:
    """The client's model name, which reaches routing, logs and response headers: printable ASCII, bounded."""
    if not isinstance(model, str):  # parse_request has checked it is a string; kept for the type
        raise ApiError(400, "model: Input should be a valid string")
    if len(model) > MAX_MODEL_NAME or not model.isascii() or not model.isprintable():
        raise ApiError(400, f"model: a model name is at most {MAX_MODEL_NAME} printable ASCII characters")
    return model


def _session_id(body: Mapping[str, Any]) -> str | None:
    """Claude Code's session: `metadata.user_id` holds a JSON string with `session_id` (older releases wrote
    `user_<hash>_account__session_<uuid>`)."""
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str):
        return None
    if user_id.startswith("{"):
        try:
            value = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return None
        session = value.get("session_id") if isinstance(value, dict) else None
        return session if isinstance(session, str) and 0 < len(session) <= 128 else None
    _, found, session = user_id.rpartition("_session_")
    return session[:128] if found and session else None


async def _read_body(exchange: Exchange, limit: int, headers: Mapping[str, str]) -> bytes:
    """The whole request body, refusing more than `limit` bytes: by Content-Length first, then while reading. A body
    over the limit is read on and thrown away (bounded) before the 413, so the client gets to read it."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header")
        if int(declared) > limit:
            await _discard_rest(exchange, int(declared) <= limit + DISCARD_BYTES)
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await exchange.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _discard_rest(exchange, True)
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _discard_rest(exchange: Exchange, worth_it: bool) -> None:
    """Read what the client is still sending and throw it away, up to `DISCARD_BYTES` and `DISCARD_SECONDS`; then the
    connection is closed after the answer."""
    exchange.close_connection = True
    if not worth_it:
        return
    discarded = 0
    with anyio.move_on_after(DISCARD_SECONDS):
        while discarded <= DISCARD_BYTES:
            message: Message = await exchange.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            discarded += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request exceeds the maximum allowed size of {limit} bytes", "request_too_large")


def _request_id(started_at: float) -> str:
    """`req_ccm_` and 24 hex digits: the milliseconds since the epoch, then 48 random bits. Time first, so that the
    ledger's unique index of request ids grows at its end: with random ids each usage row's entry lands on a page of
    its own, and at 300,000 rows the journal's writer spent 2.5 times the CPU on a row (40 µs against 16 µs, most of
    it reading and writing those pages)."""
    return f"req_ccm_{int(started_at * 1000):012x}{secrets.token_hex(6)}"


async def _until_disconnect(exchange: Exchange, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work`, cancelling it if the client disconnects first (unless the stream's relay takes the disconnect
    over). Its exceptions propagate as they are.

    The watcher is a plain asyncio task (the servers ccm runs on are asyncio's): an anyio task group per request cost
    ~60 us here against ~6 us for a task and a cancel (docs/performance-notes.md). The cancellation is the request
    task's own, so anyio scopes inside `work` see an ordinary cancellation; only the one the watcher asked for is
    absorbed here, a server's (shutdown) propagates."""
    request_task = asyncio.current_task()
    assert request_task is not None
    cancelled = False

    async def watch() -> None:
        nonlocal cancelled
        while (await exchange.receive())["type"] != "http.disconnect":
            pass
        if exchange.complete:
            return
        exchange.disconnected = True
        taken_over = exchange.on_disconnect is not None and exchange.on_disconnect()
        if not taken_over:
            cancelled = True
            request_task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await work()
    except asyncio.CancelledError:
        if cancelled and request_task.uncancel() == 0:
            return
        raise
    finally:
        watcher.cancel()


def _reply_headers(exchange: Exchange, reply: Reply, answer: Answer | None = None) -> list[tuple[bytes, bytes]]:
    """The answer's headers for the client: the adapter's, with ccm's own `request-id` (the upstream's, when it gave
    one, as `x-upstream-request-id`) and which model and deployment answered after how many attempts."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in reply.headers:
        if name == "request-id":
            headers.append((b"x-upstream-request-id", value.encode("latin-1", "replace")))
        else:
            headers.append((name.encode("latin-1"), value.encode("latin-1", "replace")))
    headers.append((b"request-id", exchange.request_id.encode()))
    if exchange.admitted is not None:
        headers += [(name.encode(), value.encode()) for name, value in exchange.admitted.headers]
    if answer is not None:
        headers.append((b"x-ccm-model", answer.model.name.encode("latin-1", "replace")))
        headers.append((b"x-ccm-deployment", answer.target.label.encode("latin-1", "replace")))
        headers.append((b"x-ccm-attempts", str(len(answer.attempts)).encode()))
    return headers
