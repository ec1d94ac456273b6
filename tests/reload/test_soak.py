"""Soak: the route file is rewritten 50 times, alternating valid and broken versions, while streaming and
non-streaming requests run without pause through a real server. No request may fail, and each must be answered by
the table that was current when it arrived.

Every valid version routes `main` to its own provider (`up3`, `up5`, …) and upstream model (`model-v3`, …), so
each reload also retires the previous provider while streams on it are still running: they must finish on it, and
its pool must be closed once they have. The upstream echoes the model it was asked for, which is compared with the
model the table current at the request's arrival names (recorded by the harness).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from tests.fakes import FakeAnthropic, Reply

from .conftest import BROKEN, HEADERS, REQUEST, eventually, routes, serve_routes, write

SAVES = 50
CLIENTS = 6  # concurrent request loops; half of them stream
ARRIVALS_PER_SAVE = 4  # requests that must arrive after each save was handled, before the next save


@pytest.mark.timeout(60)
async def test_soak_alternating_valid_and_broken_saves_under_load(
    tmp_path: Path, environ: dict[str, str], upstream: tuple[str, FakeAnthropic]
) -> None:
    url, fake = upstream
    fake.default = Reply(text="alpha beta gamma delta epsilon", pieces=5, chunk_delay=0.004)
    route_file = tmp_path / "routes.ccm"
    route_file.write_text(routes(1, provider="up1"))
    arrivals: dict[str, str] = {}
    served_by: dict[str, str] = {}
    failures: list[str] = []
    ids = itertools.count()
    stop = asyncio.Event()

    async with serve_routes(route_file, environ, arrivals) as served:
        providers = [served.holder.current.providers["up1"]]

        async def client_loop(streaming: bool) -> None:
            while not stop.is_set():
                request_id = str(next(ids))
                headers = {**HEADERS, "x-test-id": request_id}
                try:
                    if streaming:
                        async with served.client.stream(
                            "POST", "/v1/messages", json={**REQUEST, "stream": True}, headers=headers
                        ) as response:
                            body = await response.aread()
                        model = _streamed_model(body)
                        complete = body.rstrip().endswith(b'{"type":"message_stop"}') and b"event: error" not in body
                    else:
                        response = await served.client.post("/v1/messages", json=REQUEST, headers=headers)
                        body = response.content
                        model = response.json().get("model") if response.status_code == 200 else None
                        complete = True
                except Exception as error:  # noqa: BLE001 - every failure is a finding
                    failures.append(f"request {request_id}: {type(error).__name__}: {error}")
                    continue
                if response.status_code != 200 or not complete or model is None:
                    failures.append(f"request {request_id}: {response.status_code} {body[:300]!r}")
                    continue
                served_by[request_id] = model

        async with asyncio.TaskGroup() as load:
            for n in range(CLIENTS):
                load.create_task(client_loop(streaming=n % 2 == 0))
            try:
                for save in range(2, SAVES + 2):
                    if save % 2:  # odd: a valid version on a new provider
                        write(route_file, routes(save, provider=f"up{save}"))
                        await eventually(lambda save=save: served.serving() == f"model-v{save}", what=f"save {save}")
                        providers.append(served.holder.current.providers[f"up{save}"])
                    else:
                        write(route_file, BROKEN)
                        await eventually(lambda: served.reloader.status()["last_error"] is not None,
                                         what=f"save {save}")
                        assert served.serving() == f"model-v{save - 1}"
                    mark = len(arrivals)
                    await eventually(lambda mark=mark: len(arrivals) >= mark + ARRIVALS_PER_SAVE,
                                     what=f"traffic after save {save}")
            finally:
                stop.set()

        assert not failures, "\n".join(failures[:20])
        wrong = {rid: (arrivals[rid], model) for rid, model in served_by.items() if arrivals[rid] != model}
        assert not wrong, f"{len(wrong)} requests served by a table other than the one current at arrival: {wrong}"
        assert len(served_by) >= SAVES * ARRIVALS_PER_SAVE
        assert len(set(served_by.values())) == 1 + SAVES // 2  # every valid version served requests
        assert served.reloader.status()["reloads"] == SAVES // 2
        retired = providers[:-1]
        await eventually(lambda: all(p.client.is_closed for p in retired), what="every retired pool to close")
        assert not providers[-1].client.is_closed


def _streamed_model(body: bytes) -> str | None:
    marker = b'"model":"'
    start = body.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return body[start : body.index(b'"', start)].decode()
