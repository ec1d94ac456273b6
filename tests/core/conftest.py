"""Helpers for the server core's tests: hand-built routing tables, the app over `httpx.ASGITransport`, and
upstreams faked with `httpx.MockTransport` under ccm's own client (`tests.fakes.clients.mock_client`, injected
through `build_runtime`'s `client_factory`), so the tests run the client path that serves."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from ccm.core.app import App
from ccm.core.record import Records, RequestRecord
from ccm.core.runtime import RuntimeHolder, build_runtime
from ccm.table import Default, Direct, EnvRef, Literal_, Model, Provider, RetryPolicy, RoutingTable, Rule, Settings
from tests.fakes.clients import mock_client

Handler = Callable[[httpx.Request], httpx.Response]

ENVIRON = {"ANTH_KEY": "sk-upstream-secret", "BACKUP_KEY": "sk-backup-secret"}


def anthropic_provider(name: str, url: str, key: str | None = "ANTH_KEY", **extra: Any) -> Provider:
    return Provider(
        name=name,
        type="anthropic",
        url=Literal_(value=url),
        key=EnvRef(name=key) if key else None,
        auth="x-api-key",
        **extra,
    )


def make_table(
    providers: list[Provider] | None = None,
    models: list[Model] | None = None,
    fallbacks: Mapping[str, tuple[str, ...]] | None = None,
    settings: Settings | None = None,
    default: str = "main",
    retry: RetryPolicy | None = None,
) -> RoutingTable:
    providers = providers or [anthropic_provider("anth", "http://anth.test")]
    models = models or [Model(name="main", provider=providers[0].name, model="claude-upstream-1")]
    return RoutingTable(
        version="v-test",
        sources=("test.ccm",),
        settings=settings or Settings(),
        providers={p.name: p for p in providers},
        models={m.name: m for m in models},
        rules=(
            Rule(condition=Direct(), target=None, source="direct"),
            Rule(condition=Default(), target=default, source="default"),
        ),
        fallbacks=dict(fallbacks or {}),
        retry=retry or RetryPolicy(attempts=0),  # one try per model: these tests are about the chain, not retries
    )


def message_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Say hello"}],
    }
    body.update(overrides)
    return body


def anthropic_message(text: str = "Hello!", model: str = "claude-upstream-1") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 3},
    }


STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_01","type":"message","role":'
    b'"assistant","content":[],"model":"claude-upstream-1","stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":849,"cache_read_input_tokens":7,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
    b'{"type":"text","text":""}}\n\n'
    b"event: ping\ndata: {\"type\": \"ping\"}\n\n"
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
    b'{"type":"text_delta","text":"Hello"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":47}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def respond(
    status: int = 200,
    json: Any = None,
    chunks: list[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """An upstream response whose body is a real stream (as from the network), in `chunks` or as one JSON chunk.
    (httpx reads `content=bytes` eagerly, and a read response cannot be streamed raw again.)"""
    parts = chunks if chunks is not None else [orjson.dumps(json)]
    content_type = "text/event-stream" if chunks is not None else "application/json"

    async def body():
        for part in parts:
            yield part

    return httpx.Response(status, headers={"content-type": content_type, **(headers or {})}, content=body())


@dataclass
class Upstream:
    """A scripted fake upstream: answers by the requested upstream model, records every request it saw."""

    answers: dict[str, Handler] = field(default_factory=dict)
    seen: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        model = orjson.loads(request.content).get("model", "")
        handler = self.answers.get(model) or self.answers.get("*")
        if handler is None:
            return respond(200, anthropic_message(model=model), headers={"request-id": "req_up_1"})
        return handler(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.content) for r in self.seen]


@dataclass
class Harness:
    app: App
    upstream: Upstream
    records: list[RequestRecord]
    client: httpx.AsyncClient


def local_count(body: Mapping[str, Any]) -> int:
    """A deterministic stand-in for the tiktoken counter (the real one is tested with ccm.tokens)."""
    return len(orjson.dumps(body.get("messages"))) // 4


@pytest.fixture
def harness_factory():
    made: list[httpx.AsyncClient] = []

    def make(
        table: RoutingTable | None = None,
        environ: Mapping[str, str] = ENVIRON,
        upstream: Upstream | None = None,
    ) -> Harness:
        upstream = upstream or Upstream()
        records: list[RequestRecord] = []

        def client_factory(provider: Provider) -> httpx.AsyncClient:
            return mock_client(upstream)

        runtime, _ = build_runtime(table or make_table(), environ, client_factory=client_factory)
        app = App(RuntimeHolder(runtime), count_tokens=local_count, records=Records((records.append,)))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        made.append(client)
        return Harness(app, upstream, records, client)

    return make
