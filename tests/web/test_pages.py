"""The admin page over ASGI (no browser): every page answers, the guard, sign-in, CSRF, the save's rules, the reload
it causes, provider tests, explain — and that no secret ever leaves."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest

from tests.web.conftest import ADMIN_KEY, ROUTES, UPSTREAM_KEY, csrf_of, environment, pages, write_routes

PAGES = ["/admin/", "/admin/routes", "/admin/editor", "/admin/history"]


async def test_every_page_answers_a_loopback_visitor_without_an_admin_key(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        first = await http.get(PAGES[0])
        cookie = first.headers.get("set-cookie", "")
        for page in PAGES:
            response = await http.get(page)
            assert response.status_code == 200, page
            assert "content-security-policy" in response.headers
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["cache-control"] == "no-store"
        assert "ccm_admin=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
        css = await http.get("/admin/static/ccm.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]


async def test_the_api_paths_still_go_to_the_api(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0])) as (http, _):
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        missing = await http.get("/adminx")
        assert missing.status_code == 404 and missing.json()["type"] == "error"


@pytest.mark.parametrize(("client", "headers", "why"), [
    (("10.1.2.3", 5000), {}, "this machine only"),
    (("127.0.0.1", 5000), {"host": "evil.example"}, "Host must be loopback"),
    (("127.0.0.1", 5000), {"origin": "https://evil.example"}, "other web sites"),
])
async def test_without_an_admin_key_the_pages_answer_this_machine_only(tmp_path: Path, fake, client, headers,
                                                                        why) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0]), client=client) as (http, _):
        response = await http.get("/admin/", headers=headers)
        assert response.status_code == 403 and why in response.text


async def test_a_state_change_from_another_origin_is_refused_before_its_token_is_read(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY)) as (http, _):
        for headers in ({"origin": "http://127.0.0.1:9999"}, {"sec-fetch-site": "cross-site"}):
            response = await http.post("/admin/signin", data={"key": ADMIN_KEY}, headers=headers)
            assert response.status_code == 403, headers


async def test_a_request_without_the_csrf_token_is_refused(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        page = await http.get("/admin/editor")
        token = csrf_of(page.text)
        for headers in ({}, {"x-csrf-token": "forged"}, {"x-csrf-token": token + "x"}):
            refused = await http.post("/admin/api/check", json={"text": ROUTES}, headers=headers)
            assert refused.status_code == 403, headers
        form = await http.post("/admin/commit", data={"message": "no token"})
        assert form.status_code == 403 and "CSRF" in form.text
        accepted = await http.post("/admin/api/check", json={"text": ROUTES}, headers={"x-csrf-token": token})
        assert accepted.status_code == 200 and accepted.json()["ok"] is True


async def test_a_token_is_bound_to_its_session(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (first, service):
        token = csrf_of((await first.get("/admin/editor")).text)
        transport = httpx.ASGITransport(app=service.app, client=("127.0.0.1", 40001))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3456") as second:
            await second.get("/admin/editor")  # a session of its own
            refused = await second.post("/admin/api/check", json={"text": ROUTES}, headers={"x-csrf-token": token})
            assert refused.status_code == 403


async def test_sign_in_with_the_admin_key_and_out_again(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY),
                     base_url="https://127.0.0.1:3456") as (http, _):
        redirect = await http.get("/admin/routes")
        assert redirect.status_code == 303 and redirect.headers["location"].startswith("/admin/signin?next=")
        form = await http.get("/admin/signin?next=/admin/routes")
        assert ADMIN_KEY not in form.text
        signed = await http.post("/admin/signin", data={"key": ADMIN_KEY, "csrf": _signin_csrf(form.text),
                                                        "next": "/admin/routes"})
        assert signed.status_code == 303 and signed.headers["location"] == "/admin/routes"
        cookie = signed.headers["set-cookie"]
        assert ADMIN_KEY not in cookie
        assert "HttpOnly" in cookie and "Secure" in cookie and "path=/admin" in cookie.lower()
        page = await http.get("/admin/routes")
        assert page.status_code == 200 and "Rules" in page.text
        out = await http.post("/admin/signout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        http.cookies.clear()
        http.cookies.set("ccm_admin", cookie.split(";")[0].split("=", 1)[1], domain="127.0.0.1")
        assert (await http.get("/admin/routes")).status_code == 303  # the old cookie is worth nothing now


async def test_sign_in_refuses_a_wrong_key_and_a_foreign_next(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY)) as (http, _):
        form = await http.get("/admin/signin")
        wrong = await http.post("/admin/signin", data={"key": "nope", "csrf": _signin_csrf(form.text)})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        right = await http.post("/admin/signin", data={"key": ADMIN_KEY, "csrf": _signin_csrf(form.text),
                                                       "next": "//evil.example/admin/"})
        assert right.headers["location"] == "/admin/"
        no_token = await http.post("/admin/signin", data={"key": ADMIN_KEY})
        assert no_token.status_code == 403


async def test_sign_in_attempts_are_throttled(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY)) as (http, _):
        token = _signin_csrf((await http.get("/admin/signin")).text)
        statuses = [(await http.post("/admin/signin", data={"key": f"guess-{i}", "csrf": token})).status_code
                    for i in range(7)]
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
        blocked = await http.post("/admin/signin", data={"key": ADMIN_KEY, "csrf": token})
        assert blocked.status_code == 429 and "retry-after" in blocked.headers  # even the right key waits


async def test_an_admin_session_is_not_a_key_holders_and_back(tmp_path: Path, fake) -> None:
    async with pages(write_routes(tmp_path), environment(fake[0], ADMIN_KEY)) as (http, service):
        form = await http.get("/admin/signin")
        await http.post("/admin/signin", data={"key": ADMIN_KEY, "csrf": _signin_csrf(form.text)})
        admin_cookie = http.cookies.get("ccm_admin")
        assert admin_cookie
        from ccm.web.auth import Sessions

        sessions = Sessions()
        session, cookie = sessions.create("admin", "admin")
        assert sessions.find(cookie, "admin") is session
        assert sessions.find(cookie, "key") is None  # the signature names the audience
        _, key_cookie = sessions.create("key", "key_123")
        assert sessions.find(key_cookie, "admin") is None
        http.cookies.clear()
        http.cookies.set("ccm_key", admin_cookie, domain="127.0.0.1")
        assert (await http.get("/admin/")).status_code == 303


def _signin_csrf(html: str) -> str:
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


# --- no secret leaves -------------------------------------------------------------------------------------------

LITERAL = """\
provider lit {
  type    anthropic
  url     "https://user:hunter2-password@api.example.com"
  key     "sk-literal-secret-abcdef0123456789"
  headers { "x-api-key-extra" = "hdr-secret-value-0987654321", "X-Title" = "ccm" }
}

settings {
  auth "inbound-literal-key-555555555"
}

model lm = lit/claude-lit
"""


async def test_no_secret_in_any_page_or_response(tmp_path: Path, fake) -> None:
    text = ROUTES.replace("route {", LITERAL + "\nroute {")
    path = write_routes(tmp_path, text)
    secrets = [UPSTREAM_KEY, "sk-literal-secret-abcdef0123456789", "hdr-secret-value-0987654321",
               "inbound-literal-key-555555555", "hunter2-password", ADMIN_KEY]
    async with pages(path, environment(fake[0])) as (http, _):
        bodies = [(await http.get(page)).text for page in PAGES]
        token = csrf_of(bodies[0])
        headers = {"x-csrf-token": token}
        bodies.append((await http.get("/admin/api/file")).text)
        shown = (await http.get("/admin/api/file")).json()["text"]
        bodies.append((await http.post("/admin/api/check", json={"text": shown}, headers=headers)).text)
        bodies.append((await http.post("/admin/api/diff", json={"text": shown + "\n# x\n"}, headers=headers)).text)
        bodies.append((await http.post("/admin/api/test-provider", json={"provider": "up"}, headers=headers)).text)
        bodies.append((await http.post("/admin/api/test-provider", json={"provider": "lit"}, headers=headers)).text)
        bodies.append((await http.post("/admin/edit", data={"csrf": token, "kind": "model", "name": "lm",
                                                            "target": "lit/claude-lit-2"})).text)
        for body in bodies:
            for secret in secrets:
                assert secret not in body
        assert '"[redacted secret 1]"' in shown and "env(UP_KEY)" in bodies[0]


async def test_a_literal_key_survives_a_save_through_its_placeholder(tmp_path: Path, fake) -> None:
    text = ROUTES.replace("route {", LITERAL + "\nroute {")
    path = write_routes(tmp_path, text)
    async with pages(path, environment(fake[0])) as (http, _):
        token = csrf_of((await http.get("/admin/editor")).text)
        file = (await http.get("/admin/api/file")).json()
        edited = file["text"].replace("# The admin page's test routes.", "# edited on the admin page")
        saved = await http.put("/admin/api/file", json={"text": edited},
                               headers={"x-csrf-token": token, "if-match": f'"{file["version"]}"'})
        assert saved.status_code == 200, saved.text
    on_disk = path.read_text()
    assert '"sk-literal-secret-abcdef0123456789"' in on_disk and "[redacted" not in on_disk
    assert on_disk == text.replace("# The admin page's test routes.", "# edited on the admin page")


# --- saving -----------------------------------------------------------------------------------------------------


async def test_save_needs_if_match_and_refuses_a_stale_version_or_a_bad_file(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        token = csrf_of((await http.get("/admin/editor")).text)
        version = (await http.get("/admin/api/file")).json()["version"]
        headers = {"x-csrf-token": token}
        assert (await http.put("/admin/api/file", json={"text": ROUTES}, headers=headers)).status_code == 428
        broken = ROUTES.replace("default    -> main", "default    -> mian")
        refused = await http.put("/admin/api/file", json={"text": broken}, headers={**headers, "if-match": version})
        assert refused.status_code == 422
        assert any("unknown model `mian`" in d["message"] for d in refused.json()["check"]["diagnostics"])
        failing = ROUTES.replace("expect  side", "expect  main")
        refused = await http.put("/admin/api/file", json={"text": failing}, headers={**headers, "if-match": version})
        assert refused.status_code == 422  # an in-file test fails: the same check as ccm check
        assert path.read_text() == ROUTES
        first = ROUTES + "\n# first admin\n"
        ok = await http.put("/admin/api/file", json={"text": first}, headers={**headers, "if-match": version})
        assert ok.status_code == 200 and ok.headers["etag"] == f'"{ok.json()["version"]}"'
        second = ROUTES + "\n# second admin\n"
        conflict = await http.put("/admin/api/file", json={"text": second}, headers={**headers, "if-match": version})
        assert conflict.status_code == 412 and "second admin" in conflict.json()["diff"]
        assert path.read_text() == first
        assert not [p for p in tmp_path.iterdir() if p.name != "routes.ccm"]  # no temporary file left


async def test_a_plain_form_save_refuses_a_file_that_fails_the_check(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        page = await http.get("/admin/editor")
        token = csrf_of(page.text)
        version = (await http.get("/admin/api/file")).json()["version"]
        broken = ROUTES.replace("default    -> main", "default    -> mian")
        response = await http.post("/admin/save", data={"csrf": token, "version": version, "text": broken})
        assert response.status_code == 422 and "unknown model" in response.text
        assert path.read_text() == ROUTES


async def test_a_save_is_reloaded_by_the_watcher_and_attributed_to_the_admin_page(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0]), watch=True) as (http, service):
        token = csrf_of((await http.get("/admin/editor")).text)
        version = (await http.get("/admin/api/file")).json()["version"]
        text = ROUTES.replace("default    -> main", "default    -> side")
        saved = (await http.put("/admin/api/file", json={"text": text},
                                headers={"x-csrf-token": token, "if-match": version})).json()
        with anyio.fail_after(10):
            while service.runtime.table.version != saved["table_version"]:
                await asyncio.sleep(0.02)
        status = (await http.get(f"/admin/api/status?table={saved['table_version']}")).json()
        assert status["state"] == "ok" and status["source"] == "admin page" and "rules ~#3" in status["summary"]
        history = (await http.get("/admin/history")).text
        assert "admin page" in history and "rules ~#3" in history
        answer = await http.post("/v1/messages", json={"model": "claude-opus-5-5", "max_tokens": 10,
                                                       "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        assert fake[1].message_requests()[-1].json["model"] == "claude-side-1"


# --- forms ------------------------------------------------------------------------------------------------------


async def test_a_form_shows_the_change_as_a_diff_and_saves_through_the_check(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        token = csrf_of((await http.get("/admin/editor")).text)
        review = await http.post("/admin/edit", data={
            "csrf": token, "kind": "rule", "action": "set", "condition": "effort >= high", "target": "side"})
        assert review.status_code == 200
        assert "+  effort &gt;= high -&gt; side" in review.text.replace("  ", " ").replace("   ", "  ") or \
            "effort &gt;= high" in review.text
        import re

        text = re.search(r'<textarea name="text" hidden[^>]*>(.*?)</textarea>', review.text, re.S)
        version = re.search(r'name="version" value="([^"]+)"', review.text)
        assert text is not None and version is not None
        import html

        saved = await http.post("/admin/save", data={"csrf": token, "version": version.group(1),
                                                     "text": html.unescape(text.group(1))})
        assert saved.status_code == 200 and "Saved" in saved.text
    on_disk = path.read_text()
    assert "effort >= high -> side" in on_disk and "# cheap work" in on_disk and "# The admin page's" in on_disk


async def test_a_form_cannot_write_a_literal_key(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        token = csrf_of((await http.get("/admin/editor")).text)
        review = await http.post("/admin/edit", data={
            "csrf": token, "kind": "provider", "name": "more", "type": "openai", "url": "https://x.example/v1",
            "key": "sk-a-real-key-typed-by-mistake"})
        assert review.status_code == 422 and "environment variable" in review.text
        assert "sk-a-real-key-typed-by-mistake" not in review.text


# --- test provider and explain ----------------------------------------------------------------------------------


async def test_test_provider_calls_the_upstream_with_one_token(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        token = csrf_of((await http.get("/admin/")).text)
        ok = (await http.post("/admin/api/test-provider", json={"provider": "up"},
                              headers={"x-csrf-token": token})).json()
        assert ok["ok"] is True and ok["status"] == 200 and ok["answered_by"] == "claude-main-1"
        sent = fake[1].message_requests()[-1].json
        assert sent["max_tokens"] == 1 and sent["model"] == "claude-main-1"
        down = (await http.post("/admin/api/test-provider", json={"provider": "down"},
                                headers={"x-csrf-token": token})).json()
        assert down["ok"] is False and down["error"]
        form = await http.post("/admin/test-provider", data={"csrf": token, "provider": "up"})
        assert form.status_code == 200 and "Test of up" in form.text


async def test_test_provider_shows_the_upstreams_refusal_without_the_key(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    env = {**environment(fake[0]), "UP_KEY": "sk-wrong-key-for-the-fake-000000"}
    async with pages(path, env) as (http, _):
        token = csrf_of((await http.get("/admin/")).text)
        response = await http.post("/admin/api/test-provider", json={"provider": "up"},
                                   headers={"x-csrf-token": token})
        result = response.json()
        assert result["ok"] is False and result["status"] == 401
        assert "sk-wrong-key-for-the-fake-000000" not in response.text


async def test_test_provider_names_an_unset_variable(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, {"UP_URL": fake[0]}) as (http, _):
        token = csrf_of((await http.get("/admin/")).text)
        result = (await http.post("/admin/api/test-provider", json={"provider": "up"},
                                  headers={"x-csrf-token": token})).json()
        assert result["ok"] is False and "UP_KEY is not set" in result["error"]


async def test_explain_routes_a_pasted_request_as_ccm_explain_does(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    async with pages(path, environment(fake[0])) as (http, _):
        token = csrf_of((await http.get("/admin/routes")).text)
        body = '{"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}'
        result = (await http.post("/admin/api/explain", json={"request": body},
                                  headers={"x-csrf-token": token})).json()["result"]
        assert result["target_text"] == "side = up/claude-side-1" and result["rule"]["source"] == "background"
        page = await http.post("/admin/routes", data={"csrf": token, "request": body, "headers": ""})
        assert "side = up/claude-side-1" in page.text
        bad = (await http.post("/admin/api/explain", json={"request": "{"}, headers={"x-csrf-token": token})).json()
        assert "not valid JSON" in bad["error"]


# --- git --------------------------------------------------------------------------------------------------------


async def test_history_shows_the_working_tree_diff_and_commits_it(tmp_path: Path, fake) -> None:
    path = write_routes(tmp_path)
    git = ["git", "-C", str(tmp_path)]
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, *ident, "add", "routes.ccm"], check=True)
    subprocess.run([*git, *ident, "commit", "-qm", "start"], check=True)
    path.write_text(ROUTES + "\n# a change on disk\n")
    env = {**environment(fake[0]), "GIT_AUTHOR_NAME": "admin", "GIT_AUTHOR_EMAIL": "a@example.com",
           "GIT_COMMITTER_NAME": "admin", "GIT_COMMITTER_EMAIL": "a@example.com"}
    import os

    previous = {k: os.environ.get(k) for k in env if k.startswith("GIT_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("GIT_")})
    try:
        async with pages(path, env) as (http, _):
            page = await http.get("/admin/history")
            assert "+# a change on disk" in page.text
            committed = await http.post("/admin/commit", data={"csrf": csrf_of(page.text),
                                                               "message": "routes: <b>a note</b>"})
            assert committed.status_code == 200 and "Committed." in committed.text
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    log = subprocess.run([*git, "log", "--format=%s"], capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0] == "routes: <b>a note</b>"
    status = subprocess.run([*git, "status", "--short"], capture_output=True, text=True, check=True).stdout
    assert status == ""
