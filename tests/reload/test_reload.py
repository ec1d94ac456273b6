"""Hot reload through a real server: saves become visible, bad saves are refused and reported, requests in flight
keep the runtime they started with, and what a reload retires is closed once its requests are done."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from ccm.compile.check import check
from ccm.core.reload import diff_tables
from ccm.table import Provider
from ccm.upstream.client import make_client
from tests.fakes import FakeAnthropic, Reply

from .conftest import BROKEN, FAILING_TEST, HEADERS, REQUEST, eventually, routes, save_by_rename, serve_routes, write

pytestmark = pytest.mark.usefixtures("watcher")  # every test on each way of watching (tests/conftest.py)


@pytest.fixture
def route_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.ccm"
    path.write_text(routes(1))
    return path


async def test_a_save_becomes_visible_to_requests(route_file: Path, environ: dict[str, str], caplog) -> None:
    caplog.set_level(logging.INFO, logger="ccm.reload")
    async with serve_routes(route_file, environ) as served:
        assert (await served.ask()).json()["model"] == "model-v1"
        first = (await served.health())["reload"]

        write(route_file, routes(2))
        await eventually(lambda: served.serving() == "model-v2", what="the save to be served")

        assert (await served.ask()).json()["model"] == "model-v2"
        status = (await served.health())["reload"]
        assert status["reloads"] == 1 and status["last_error"] is None
        assert status["version"] != first["version"]
        summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reloaded routes.ccm")]
        assert len(summary) == 1 and summary[0].endswith(": models ~main"), summary


async def test_a_broken_save_is_rejected_and_reported_while_service_continues(
    route_file: Path, environ: dict[str, str], caplog
) -> None:
    async with serve_routes(route_file, environ) as served:
        write(route_file, BROKEN)
        await eventually(lambda: served.reloader.status()["last_error"] is not None, what="the rejection")

        assert (await served.ask()).json()["model"] == "model-v1"  # the last good table still serves
        error = (await served.health())["reload"]["last_error"]
        assert error["message"].startswith(f"{route_file}:12:14: error:"), error
        assert "mian" in error["message"] and error["at"]
        logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
        assert "rejected; still serving" in logged
        assert "default -> mian" in logged and "^^^^" in logged  # the source line and the caret

        write(route_file, routes(3))  # a good file clears the error
        await eventually(lambda: served.serving() == "model-v3", what="the good save")
        assert (await served.health())["reload"]["last_error"] is None
        assert (await served.ask()).json()["model"] == "model-v3"


async def test_a_file_whose_own_tests_fail_is_not_loaded(route_file: Path, environ: dict[str, str], caplog) -> None:
    async with serve_routes(route_file, environ) as served:
        write(route_file, FAILING_TEST)
        await eventually(lambda: served.reloader.status()["last_error"] is not None, what="the rejection")
        assert served.serving() == "model-v1"
        assert "everything goes to main" in "\n".join(r.getMessage() for r in caplog.records)


async def test_an_in_flight_stream_finishes_on_its_original_target_and_retired_pools_close_after(
    tmp_path: Path, environ: dict[str, str], upstream: tuple[str, FakeAnthropic]
) -> None:
    url, fake = upstream
    fake.script(Reply(text="one two three four five six", pieces=6, chunk_delay=0.1))
    route_file = tmp_path / "routes.ccm"
    route_file.write_text(routes(1, provider="old"))
    async with serve_routes(route_file, {**environ, "OTHER_URL": url}) as served:
        old = served.holder.current.providers["old"]
        async with served.client.stream("POST", "/v1/messages", json={**REQUEST, "stream": True},
                                        headers=HEADERS) as stream:
            assert stream.status_code == 200
            chunks = stream.aiter_bytes()
            received = [await chunks.__anext__()]

            # The reload removes provider `old`: the stream still uses it, so its pool must stay open.
            write(route_file, routes(2, provider="new", url_variable="OTHER_URL"))
            await eventually(lambda: served.serving() == "model-v2", what="the reload")
            assert (await served.ask()).json()["model"] == "model-v2"
            assert not old.client.is_closed

            received += [chunk async for chunk in chunks]
        body = b"".join(received)
        assert b'"model":"model-v1"' in body and b"model-v2" not in body
        assert body.rstrip().endswith(b'data: {"type":"message_stop"}')
        await eventually(lambda: old.client.is_closed, what="the retired provider's pool to close")


async def test_unchanged_providers_keep_their_pool_and_state(route_file: Path, environ: dict[str, str]) -> None:
    async with serve_routes(route_file, environ) as served:
        before = served.holder.current.providers["up"]
        write(route_file, routes(2))
        await eventually(lambda: served.serving() == "model-v2", what="the reload")
        after = served.holder.current.providers["up"]
        assert after is before  # same client, adapter, limiter and breaker
        assert not after.client.is_closed


async def test_an_edit_that_only_moves_lines_keeps_every_provider(route_file: Path, environ: dict[str, str]) -> None:
    async with serve_routes(route_file, environ) as served:
        before = served.holder.current.providers["up"]
        write(route_file, "# a comment that shifts every line down\n\n" + routes(2))
        await eventually(lambda: served.serving() == "model-v2", what="the reload")
        assert served.holder.current.providers["up"] is before


async def test_a_change_to_an_included_file_reloads(tmp_path: Path, environ: dict[str, str]) -> None:
    route_file = tmp_path / "routes.ccm"
    models = tmp_path / "models" / "main.ccm"
    models.parent.mkdir()
    models.write_text("model main = up/model-v1\n")
    route_file.write_text(routes(1).replace("model main = up/model-v1", 'include "models/main.ccm"'))
    async with serve_routes(route_file, environ) as served:
        assert served.serving() == "model-v1"
        write(models, "model main = up/model-v2\n")
        await eventually(lambda: served.serving() == "model-v2", what="the include's save to be served")
        assert (await served.ask()).json()["model"] == "model-v2"


async def test_a_save_by_atomic_rename_reloads(route_file: Path, environ: dict[str, str]) -> None:
    async with serve_routes(route_file, environ) as served:
        save_by_rename(route_file, routes(2))
        await eventually(lambda: served.serving() == "model-v2", what="the renamed save to be served")
        save_by_rename(route_file, routes(3))  # the new inode is watched too
        await eventually(lambda: served.serving() == "model-v3", what="the second renamed save")


async def test_a_folder_deleted_and_made_again_is_watched_again(tmp_path: Path, environ: dict[str, str]) -> None:
    """A dotfiles checkout removed and cloned again, a volume unmounted and mounted: the file that comes back is
    served without another save, and its later saves are seen."""
    folder = tmp_path / "config"
    folder.mkdir()
    route_file = folder / "routes.ccm"
    route_file.write_text(routes(1))
    async with serve_routes(route_file, environ) as served:
        shutil.rmtree(folder)
        await eventually(lambda: served.reloader.status()["last_error"] is not None, what="the loss to be noticed")
        assert served.serving() == "model-v1"  # the last good table keeps serving
        folder.mkdir()
        write(route_file, routes(2))
        await eventually(lambda: served.serving() == "model-v2", timeout=10, what="the file back to be served")
        write(route_file, routes(3))
        await eventually(lambda: served.serving() == "model-v3", what="its next save")


async def test_sighup_reloads(route_file: Path, environ: dict[str, str], caplog) -> None:
    caplog.set_level(logging.INFO, logger="ccm.reload")
    async with serve_routes(route_file, environ, watch=False) as served:
        write(route_file, routes(2))
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: served.serving() == "model-v2", what="the SIGHUP reload")
        assert (await served.health())["reload"]["reloads"] == 1
        # a SIGHUP with nothing changed still says what came of it
        os.kill(os.getpid(), signal.SIGHUP)
        said = lambda: any("on SIGHUP: unchanged, still serving" in r.getMessage() for r in caplog.records)  # noqa: E731
        await eventually(said, what="the unchanged SIGHUP's log line")


async def test_health_is_degraded_while_the_last_save_is_rejected(route_file: Path, environ: dict[str, str]) -> None:
    async with serve_routes(route_file, environ) as served:
        assert (await served.health())["status"] == "ok"
        write(route_file, BROKEN)
        await eventually(lambda: served.reloader.status()["last_error"] is not None, what="the rejection")
        health = await served.health()
        assert health["status"] == "degraded"
        assert len(health["reasons"]) == 1 and health["reasons"][0].startswith("the last reload failed, still serving")
        write(route_file, routes(2))
        await eventually(lambda: served.serving() == "model-v2", what="the good save")
        assert (await served.health())["status"] == "ok"


async def test_a_reload_does_not_repeat_the_unset_variables(route_file: Path, environ: dict[str, str], caplog) -> None:
    caplog.set_level(logging.INFO, logger="ccm")
    with_unset = routes(2).replace('key  env("UPSTREAM_KEY")',
                                   'key  env("UPSTREAM_KEY")\n  headers { "x-team" = env("TEAM_UNSET") }')
    route_file.write_text(with_unset)
    async with serve_routes(route_file, environ) as served:
        write(route_file, with_unset.replace("model-v2", "model-v3"))
        await eventually(lambda: served.serving() == "model-v3", what="the save")
        assert not [r for r in caplog.records if "TEAM_UNSET" in r.getMessage()]


def test_diff_tables_names_what_changed(tmp_path: Path, environ: dict[str, str]) -> None:
    def table(text: str):  # type: ignore[no-untyped-def]
        path = tmp_path / "routes.ccm"
        path.write_text(text)
        compiled = check(path, environ)
        assert compiled.table is not None, [d.render() for d in compiled.problems]
        return compiled.table

    base = table(routes(1))
    assert diff_tables(base, table("# a comment moves every line\n" + routes(1))) == "no routing changes"
    grown = routes(1).replace(
        "route {\n", "model fast = up/fast-model\n\nroute {\n  thinking -> fast\n"
    ).replace("model spare = up/spare-model\n", "")
    assert diff_tables(base, table(grown)) == "rules 2→3, models +fast -spare"  # `direct` comes first
    moved = routes(1, url_variable="OTHER_URL").replace("model-v1", "model-v2")
    assert diff_tables(base, table(moved)) == "models ~main, providers ~up"



async def test_a_provider_a_reload_changes_gets_the_services_client_factory(
    route_file: Path, environ: dict[str, str]
) -> None:
    """The first runtime and every runtime a reload builds make their clients the same way (a reload once fell back
    to the default factory, silently)."""
    made: list[str] = []

    def factory(provider: Provider) -> httpx.AsyncClient:
        made.append(provider.name)
        return make_client(provider)

    write(route_file, routes(1))
    async with serve_routes(route_file, environ, client_factory=factory) as served:
        assert made == ["up"]
        write(route_file, routes(2, provider="up2"))
        await eventually(lambda: served.serving() == "model-v2", what="the reload")
        assert made == ["up", "up2"]
        assert (await served.ask()).status_code == 200


async def test_a_reload_that_would_open_a_public_server_to_anyone_is_refused(
    route_file: Path, environ: dict[str, str]
) -> None:
    guarded = routes(1).replace("# version 1", 'settings {\n  auth env("CCM_KEY")\n}')
    write(route_file, guarded)
    async with serve_routes(route_file, {**environ, "CCM_KEY": "inbound-key-1"}, public=True) as served:
        write(route_file, routes(2))  # the same file without `auth`
        await eventually(lambda: served.reloader.status()["last_error"] is not None, what="the rejection")
        assert "no inbound `auth` key" in served.reloader.status()["last_error"]["message"]
        assert served.serving() == "model-v1"
        assert served.holder.current.auth_required
