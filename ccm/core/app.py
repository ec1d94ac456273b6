"""The ASGI app: Claude Code's side of ccm.

    POST /v1/messages               route, dispatch, answer (JSON or a relayed SSE stream); the query is ignored
    POST /v1/messages/count_tokens  `{"input_tokens": N}`, counted locally or forwarded to an Anthropic provider
    GET  /v1/models[/{id}]          the table's declared aliases, in Anthropic's list shape
    GET  /health                    liveness, table version, providers (type, configured) — open without auth
    anything else                   Anthropic-shaped 404; a known path with the wrong method: 405

Every request reads `holder.current` once and keeps that runtime to the end, so a reload never changes a request
midway. Failures are Anthropic error bodies with the right status (`ApiError`); an unexpected exception becomes a
500 `api_error` "internal error" with the traceback logged, never sent. After a stream's 200 has gone out, a
failure is an `event: error` frame and the stream ends cleanly.

While the upstream is being asked and the answer relayed, a task watches for `http.disconnect`: a client that
leaves cancels the upstream request (its connection is closed). Each request ends in one `RequestRecord` handed to
the finisher's subscribers (`ccm.core.finish`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from ccm.core.dispatch import DispatchFailed, Request, dispatch
from ccm.core.finish import Finisher, RequestRecord, log_request
from ccm.core.runtime import Runtime, RuntimeHolder, close_providers, target_name
from ccm.errors import ApiError, UpstreamError
from ccm.messages_request import parse_request
from ccm.providers.base import CLIENT_AUTH, Call, Reply
from ccm.route import NoRouteError, select_route, strip_subagent_tag
from ccm.table import Model

log = logging.getLogger("ccm.core")

Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
TokenCount = Callable[[Mapping[str, Any]], int]

JSON = (b"content-type", b"application/json")
CLIENT_CLOSED = 499  # the status logged for a request whose client left before any answer (nginx's convention)


class ClientDisconnected(Exception):
    """The client went away before its request was answered."""


@dataclass(slots=True)
class Exchange:
    """One request/response: what has been sent so far decides how a failure can still be reported."""

    receive: Receive
    send: Send
    record: RequestRecord
    started: bool = False  # http.response.start sent
    complete: bool = False  # the final body message sent

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self.record.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        if not more:
            self.complete = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await self.start(status, [*headers, (b"content-length", str(len(body)).encode())])
        await self.body(body)

    async def fail(self, error: ApiError, attempts: int = 0) -> None:
        self.record.error = error.error_type
        if self.complete:
            return
        if self.started:  # the stream's 200 is out: the error travels in-band, and the stream ends cleanly
            await self.body(error.event(), more=True)
            await self.body(b"")
            return
        headers = [JSON, (b"request-id", _request_id())]
        headers += [(name.encode(), value.encode()) for name, value in error.headers]
        if attempts:
            headers.append((b"x-ccm-attempts", str(attempts).encode()))
        await self.respond(error.status, error.body(), headers)


class App:
    def __init__(
        self,
        holder: RuntimeHolder,
        count_tokens: TokenCount | None = None,
        finisher: Finisher | None = None,
    ) -> None:
        self.holder = holder
        self._counts_locally = count_tokens is None
        self._encoding_loaded = False
        self._encoding_lock: anyio.Lock | None = None  # created inside the event loop, on first use
        if count_tokens is None:
            from ccm.tokens import TokenCounter

            count_tokens = TokenCounter().count
        self.count_tokens = count_tokens
        self.finisher = finisher if finisher is not None else Finisher([log_request])
        # more top-level /health fields, each rendered per /health request (the reloader adds `reload`)
        self.health_sections: dict[str, Callable[[], Any]] = {}
        self._routes: dict[str, tuple[str, Callable[[Exchange, Runtime, dict[str, str]], Awaitable[None]]]] = {
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/models": ("GET", self._models),
            "/health": ("GET", self._health),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await close_providers(list(self.holder.current.providers.values()))
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        path: str = scope["path"]
        record = RequestRecord(time.time(), scope["method"], path, 500, 0.0)
        exchange = Exchange(receive, send, record)
        try:
            runtime = self.holder.current
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            handler = self._handler(path, scope["method"])
            if runtime.auth_required and path != "/health":
                _authenticate(runtime, headers)
            await handler(exchange, runtime, headers)
        except DispatchFailed as error:
            record.attempts = tuple(error.attempts)
            await exchange.fail(error, len(error.attempts))
        except ApiError as error:
            await exchange.fail(error)
        except ClientDisconnected:
            record.client_disconnected = True
        except Exception:  # noqa: BLE001 - the one place an unexpected failure is turned into a 500
            log.exception("internal error on %s %s", scope["method"], path)
            try:
                await exchange.fail(ApiError(500, "internal error", "api_error"))
            except Exception:  # noqa: BLE001 - the client is gone; nothing left to tell it
                record.client_disconnected = True
        finally:
            if record.client_disconnected and not exchange.started:
                record.status = CLIENT_CLOSED
            record.latency_ms = (time.perf_counter() - began) * 1000
            self.finisher.finish(record)

    def _handler(self, path: str, method: str) -> Callable[[Exchange, Runtime, dict[str, str]], Awaitable[None]]:
        route = self._routes.get(path)
        if route is None and path.startswith("/v1/models/"):
            route = ("GET", self._model)
        if route is None:
            raise ApiError(404, f"Not found: {method} {path}", "not_found_error")
        allowed, handler = route
        if method != allowed:
            raise ApiError(405, f"Method {method} not allowed on {path} (use {allowed})", headers=(("allow", allowed),))
        return handler

    # --- endpoints -------------------------------------------------------------------------------------------------

    async def _health(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        # breaker state and in-flight counts change between requests, so they are rendered here, not once per table
        breakers = {name: p.deployments.snapshot() for name, p in runtime.providers.items()}
        sections = {name: section() for name, section in self.health_sections.items()}
        body = orjson.dumps({**runtime.health, "breakers": breakers, **sections})
        await exchange.respond(200, body, [JSON])

    async def _models(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        await exchange.respond(200, runtime.models_body, [JSON])

    async def _model(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        name = exchange.record.path.removeprefix("/v1/models/")
        body = runtime.model_bodies.get(name)
        if body is None:
            raise ApiError(404, f"model {name!r} is not declared in the route file", "not_found_error")
        await exchange.respond(200, body, [JSON])

    async def _count_tokens(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        raw = await _read_body(exchange, runtime.table.settings.body_limit, headers)
        body = parse_request(raw, count_only=True)
        forward_to = runtime.table.settings.count_tokens
        if forward_to is not None:
            reply = await self._forward_count(runtime, forward_to, body, raw, _upstream_headers(runtime, headers))
            if reply is not None:
                await exchange.respond(reply.status, reply.body or b"", _response_headers(reply, None, 1))
                return
        if self._counts_locally:
            await self._encoding_ready()
        count = self.count_tokens(body)
        await exchange.respond(200, orjson.dumps({"input_tokens": count}), [JSON])

    async def _request_counter(self, runtime: Runtime, raw: bytes) -> TokenCount:
        """How this request is counted, if routing or dispatch asks: the body's size, when it alone bounds the count
        below every threshold of the table (then each decision is the one the exact count gives, and most requests
        need no tokenizer); else the local counter, its tokenizer loaded on a thread first."""
        floor = runtime.count_floor
        if self._counts_locally and floor is not None:
            from ccm.tokens import token_ceiling

            ceiling = token_ceiling(raw)
            if ceiling is not None and ceiling < floor:
                return lambda body: ceiling
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
            return await adapter.count_tokens(Call(body, raw, headers, False, model))  # type: ignore[no-any-return]
        except UpstreamError as error:
            if error.reason == "4xx":
                raise
            log.warning("count_tokens via %s failed (%s); counting locally", provider, error.message)
            return None

    async def _messages(self, exchange: Exchange, runtime: Runtime, headers: dict[str, str]) -> None:
        record = exchange.record
        raw = await _read_body(exchange, runtime.table.settings.body_limit, headers)
        body = parse_request(raw)
        count_tokens = await self._request_counter(runtime, raw)
        try:
            decision = select_route(runtime.table, body, headers, count_tokens=count_tokens)
        except NoRouteError as error:
            raise ApiError(500, str(error), "api_error") from None
        record.rule = decision.rule.source if decision.rule is not None else None
        record.rule_index = decision.rule_index
        record.model = decision.target.name
        record.target = target_name(decision.target)
        exact: bytes | None = raw
        if decision.strip_subagent_tag:
            body = strip_subagent_tag(body)
            exact = None  # serialised only by an adapter that forwards bytes (the passthrough), once, with its edits
        record.stream = stream = body.get("stream") is True
        request = Request(body, exact, _upstream_headers(runtime, headers), stream)

        async def answer() -> None:
            outcome = await dispatch(runtime, decision.chain, request, count_tokens=count_tokens)
            record.attempts = tuple(outcome.attempts)
            record.model = outcome.model.name
            record.target = target_name(outcome.model)
            reply = outcome.reply
            record.usage = reply.usage
            response_headers = _response_headers(reply, outcome.model, len(outcome.attempts))
            try:
                if reply.stream is None:
                    await exchange.respond(reply.status, reply.body or b"", response_headers)
                else:
                    await _relay(exchange, reply, response_headers)
            finally:
                with anyio.CancelScope(shield=True):
                    await reply.aclose()

        await _until_disconnect(exchange, answer)


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


def _authenticate(runtime: Runtime, headers: Mapping[str, str]) -> None:
    presented = headers.get("x-api-key")
    if presented is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
    if presented:
        candidate = presented.encode()
        # compare against every key so the time taken does not say which one came close
        matched = [hmac.compare_digest(candidate, key) for key in runtime.auth_keys]
        if any(matched):
            return
    raise ApiError(401, "invalid x-api-key", "authentication_error")


def _upstream_headers(runtime: Runtime, headers: dict[str, str]) -> Mapping[str, str]:
    """The client's headers as adapters see them: with ccm's own inbound key removed when auth is on."""
    if not runtime.auth_required:
        return headers
    return {name: value for name, value in headers.items() if name not in CLIENT_AUTH}


async def _read_body(exchange: Exchange, limit: int, headers: Mapping[str, str]) -> bytes:
    """The whole request body, refusing more than `limit` bytes: by Content-Length first, then while reading."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header")
        if int(declared) > limit:
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
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request exceeds the maximum allowed size of {limit} bytes", "request_too_large")


async def _until_disconnect(exchange: Exchange, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work`, cancelling it if the client disconnects first. Its exceptions propagate as they are.

    The watcher is a plain asyncio task (the servers ccm runs on are asyncio's): an anyio task group per request cost
    ~60 us here against ~6 us for a task and a cancel (docs/performance-notes.md). The cancellation is the request
    task's own, so anyio scopes inside `work` see an ordinary cancellation; only the one the watcher asked for is
    absorbed here, a server's (shutdown) propagates."""
    request_task = asyncio.current_task()
    assert request_task is not None
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        while (await exchange.receive())["type"] != "http.disconnect":
            pass
        if not exchange.complete:
            exchange.record.client_disconnected = disconnected = True
            request_task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await work()
    except asyncio.CancelledError:
        if disconnected and request_task.uncancel() == 0:
            return
        raise
    finally:
        watcher.cancel()


async def _relay(exchange: Exchange, reply: Reply, headers: list[tuple[bytes, bytes]]) -> None:
    """Send the stream's 200 and forward each chunk as it arrives; a failure after that is an `error` frame."""
    assert reply.stream is not None
    await exchange.start(reply.status, headers)
    try:
        async for chunk in reply.stream:
            await exchange.body(chunk, more=True)
    except UpstreamError as error:
        exchange.record.error = error.error_type
        await exchange.body(error.event(), more=True)
    await exchange.body(b"")


def _response_headers(reply: Reply, model: Model | None, attempts: int) -> list[tuple[bytes, bytes]]:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
    if not any(name == b"request-id" for name, _ in headers):
        headers.append((b"request-id", _request_id()))
    if model is not None:
        headers.append((b"x-ccm-model", model.name.encode("latin-1", "replace")))
        headers.append((b"x-ccm-attempts", str(attempts).encode()))
    return headers


def _request_id() -> bytes:
    return b"req_ccm_" + secrets.token_hex(12).encode()
