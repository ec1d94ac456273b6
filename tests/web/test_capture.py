"""The admin page's request-capture switch over ASGI: started and stopped by the overview's forms (a request through
the API is written, without its credentials, while it is on, and none after), each form needing the session's CSRF
token, a folder that cannot be used answered on the page with nothing changed, and nothing of it for a key holder."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from ccm.service import Service
from tests.web.conftest import ADMIN_KEY, csrf_of, environment, pages, write_routes
from tests.web.test_dashboard import new_key, sign_in

ASK = {"model": "claude-opus-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "capture me"}]}
CLIENT_KEY = "client-key-never-written-0123456789"


async def token(http: httpx.AsyncClient) -> str:
    return csrf_of((await http.get("/admin/")).text)


async def ask(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/messages", json=ASK, headers={"x-api-key": CLIENT_KEY, "x-app": "cli"})
    assert answer.status_code == 200, answer.text


async def captured(folder: Path, count: int) -> list[Path]:
    """The folder's files once `count` are there (the writer is a thread: a request never waits for it)."""
    with anyio.fail_after(5):
        while len(files := sorted(folder.glob("*.json"))) < count:
            await anyio.sleep(0.02)
    return files


async def test_the_switch_starts_capture_into_a_folder_and_stops_it(tmp_path: Path, fake) -> None:
    folder = tmp_path / "state" / "capture"
    async with pages(write_routes(tmp_path), environment(fake[0])) as (http, service):
        page = await http.get("/admin/")
        assert "Request capture" in page.text and "Start capture" in page.text and not service.capture.active
        started = await http.post("/admin/capture/start", data={"csrf": csrf_of(page.text), "folder": str(folder)})
        assert started.status_code == 303 and started.headers["location"] == "/admin/#capture"
        assert service.capture.active
        await ask(http)
        [file] = await captured(folder, 1)
        written = json.loads(file.read_text())
        assert written["path"] == "/v1/messages" and written["body"] == ASK
        assert written["headers"]["x-app"] == "cli" and "x-api-key" not in written["headers"]
        assert CLIENT_KEY not in file.read_text()
        shown = (await http.get("/admin/")).text
        assert "Stop capture" in shown and str(folder) in shown and "1 of at most 1,000 files" in shown

        stopped = await http.post("/admin/capture/stop", data={"csrf": await token(http)})
        assert stopped.status_code == 303 and not service.capture.active
        await ask(http)
        await anyio.sleep(0.1)  # time enough for a writer, were there one
        assert list(folder.glob("*.json")) == [file]
        shown = (await http.get("/admin/")).text
        assert "Start capture" in shown and "the last capture wrote into" in shown


async def test_the_forms_need_the_csrf_token_and_nothing_changes_without_it(tmp_path: Path, fake) -> None:
    folder = tmp_path / "capture"
    async with pages(write_routes(tmp_path), environment(fake[0])) as (http, service):
        csrf = await token(http)
        for form in ({"folder": str(folder)}, {"folder": str(folder), "csrf": "forged"},
                     {"folder": str(folder), "csrf": csrf + "x"}):
            refused = await http.post("/admin/capture/start", data=form)
            assert refused.status_code == 403 and "CSRF" in refused.text
        assert not service.capture.active and not folder.exists()
        service.capture.start(folder)
        for form in ({}, {"csrf": "forged"}):
            assert (await http.post("/admin/capture/stop", data=form)).status_code == 403
        assert service.capture.active
        service.capture.stop()


@pytest.mark.parametrize(("typed", "says"), [
    ("", "name the folder to capture into"),
    ("relative/capture", "is a relative path"),
    ("{tmp}/a-file", "is a file, not a folder"),
    ("{tmp}/a-file/below", "cannot create"),
])
async def test_a_folder_that_cannot_be_used_is_answered_on_the_page(tmp_path: Path, fake, typed: str,
                                                                    says: str) -> None:
    (tmp_path / "a-file").write_text("in the way")
    running = tmp_path / "running"
    async with pages(write_routes(tmp_path), environment(fake[0])) as (http, service):
        for before in (None, running):  # off (the form), then on (a post): a refused start leaves capture as it was
            if before is not None:
                service.capture.start(before)
            form = {"csrf": await token(http), "folder": typed.format(tmp=tmp_path)}
            answer = await http.post("/admin/capture/start", data=form)
            assert answer.status_code == 422 and says in answer.text and "Traceback" not in answer.text
            assert 'id="capture-error"' in answer.text
            if before is None:  # the form again, with what was typed, marked
                assert 'aria-invalid="true"' in answer.text and f'value="{form["folder"]}"' in answer.text
            assert service.capture.active is (before is not None)
            assert service.capture.status()["directory"] == (str(before) if before else None)
        service.capture.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "routes.ccm", "running"]


async def test_the_default_folder_is_under_the_state_home(tmp_path: Path, fake) -> None:
    env = {**environment(fake[0]), "XDG_STATE_HOME": str(tmp_path / "state")}
    async with pages(write_routes(tmp_path), env) as (http, _):
        page = await http.get("/admin/")
        assert f'value="{tmp_path / "state" / "ccm" / "capture"}"' in page.text


async def test_a_key_holder_neither_sees_nor_uses_the_switch(tmp_path: Path, fake) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    folder = tmp_path / "capture"
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY), db=db) as (http, service):
        await holder_signed_in(http, service)
        dashboard = await http.get("/")
        assert dashboard.status_code == 200 and "Request capture" not in dashboard.text
        refused = await http.get("/admin/")
        assert refused.status_code == 303 and "/admin/signin" in refused.headers["location"]
        csrf = csrf_of(dashboard.text)  # the dashboard's token is no admin token
        for url in ("/admin/capture/start", "/admin/capture/stop"):
            refused = await http.post(url, data={"csrf": csrf, "folder": str(folder)})
            assert refused.status_code == 303 and "/admin/signin" in refused.headers["location"], url
        assert not service.capture.active and not folder.exists()


async def holder_signed_in(http: httpx.AsyncClient, service: Service) -> None:
    _, secret = await new_key(service, "holder")
    signed = await sign_in(http, secret)
    assert signed.status_code == 303
