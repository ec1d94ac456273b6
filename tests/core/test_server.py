"""The app on a real hypercorn server with a real loopback upstream: incremental streaming, disconnects that
cancel the upstream request, and a server that keeps serving after garbage."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from ccm.core.app import App
from ccm.core.record import Records, RequestRecord
from ccm.core.runtime import RuntimeHolder, build_runtime
from ccm.table import Model

from .conftest import anthropic_provider, local_count, make_table, message_body
from .servers import MESSAGE_START, REST, GatedUpstream, running


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def upstream():
    fake = GatedUpstream()
    with running(fake) as url:
        fake.url = url
        yield fake
    fake.release.set()


@pytest.fixture
def ccm(upstream):
    table = make_table(
        providers=[anthropic_provider("anth", upstream.url)],
        models=[Model(name="main", provider="anth", model="m")],
    )
    runtime, _ = build_runtime(table, {"ANTH_KEY": "k"})
    records: list[RequestRecord] = []
    app = App(RuntimeHolder(runtime), count_tokens=local_count, records=Records((records.append,)))
    with running(app) as url:
        yield url, records


def test_stream_chunks_arrive_before_the_upstream_has_finished(ccm, upstream):
    url, records = ccm
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{url}/v1/messages", json=message_body(stream=True)) as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)
        # the upstream is still holding the rest back: this chunk was relayed while it was in flight
        assert first == MESSAGE_START
        assert not upstream.finished.is_set()
        upstream.release.set()
        rest = b"".join(chunks)
    assert rest == REST
    assert wait_for(lambda: len(records) == 1)
    assert records[0].usage is not None and records[0].usage.output == 2
    assert not records[0].client_disconnected


def test_client_disconnect_cancels_the_upstream_request(ccm, upstream):
    url, records = ccm
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{url}/v1/messages", json=message_body(stream=True)) as response,
    ):
        assert next(response.iter_raw()) == MESSAGE_START
        # leaving the block before the end closes the client's connection mid-stream
    assert wait_for(upstream.saw_disconnect.is_set), "ccm kept the upstream request open after its client left"
    assert wait_for(lambda: len(records) == 1)
    assert records[0].client_disconnected
    assert not upstream.finished.is_set()


def test_server_keeps_serving_after_malformed_requests(ccm, upstream):
    url, records = ccm
    parts = urlsplit(url)
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"POST /v1/messages HTTP/1.1\r\nContent-Length: zzz\r\n\r\n"):
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as raw:
            raw.sendall(garbage)
            raw.recv(4096)
    with httpx.Client(timeout=10) as client:
        bad = client.post(f"{url}/v1/messages", content=b'{"model": [', headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["type"] == "error"
        deep = client.post(f"{url}/v1/messages", content=b"[" * 100_000, headers={"content-type": "application/json"})
        assert deep.status_code == 400
        bad_utf8 = client.post(f"{url}/v1/messages", content=b'{"model": "\xff"}',
                               headers={"content-type": "application/json"})
        assert bad_utf8.status_code == 400
        good = client.post(f"{url}/v1/messages", json=message_body())
        assert good.status_code == 200
        assert orjson.loads(good.content)["content"][0]["text"] == "hi"
