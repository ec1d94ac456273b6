"""`ccm run --capture DIR` on real traffic: each request lands as a `{method, path, headers, body}` file that
`ccm explain` and an in-file `request file "…"` test read as they are; credentials never land; the bounds hold."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from ccm.compile.check import check
from tests.conftest import load_fixture
from tests.fakes import CcmServer, FakeOpenAI, serve
from tests.fakes.ccm_server import CCM_COMMAND, REPO

KEY = "sk-capture-openai"
ROUTES = """
provider fake {
  type openai
  url  env("OPENAI_BASE_URL")
  key  env("OPENAI_API_KEY")
}
model main = fake/gpt-fake {
  max_output 8k
}
model quick = fake/gpt-quick {
  max_output 8k
}
route {
  subagent -> quick
  default  -> main
}
"""
SECRETS = {"x-api-key": "ccm-local-secret", "authorization": "Bearer sk-very-secret", "cookie": "sid=secret",
           "x-ccm-key": "secret-ccm", "x-custom-token": "secret-token", "x-my-secret": "s3cret",
           "anthropic-auth-token": "secret-auth"}


def post(url: str, body: dict[str, object], path: str = "/v1/messages") -> None:
    headers = {"anthropic-version": "2023-06-01", "x-app": "cli", **SECRETS}
    response = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text


def captured_files(folder: Path, count: int) -> list[Path]:
    deadline = time.monotonic() + 5  # a thread writes them, just after the request
    while len(files := sorted(folder.glob("*.json"))) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return files


def test_captured_requests_replay_through_explain_and_in_file_tests(tmp_path: Path) -> None:
    capture = tmp_path / "captures"
    subagent = load_fixture("subagent-request.json")["body"]
    first_turn = load_fixture("interactive-first-turn.json")["body"]
    with serve(FakeOpenAI(KEY)) as (url, fake):
        env = {"OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": KEY}
        with CcmServer.from_text(tmp_path, ROUTES, env, args=("--capture", str(capture))) as ccm:
            post(ccm.url, subagent)
            post(ccm.url, first_turn)
            post(ccm.url, {"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "hi"}]},
                 "/v1/messages/count_tokens")
            files = captured_files(capture, 3)
        assert fake.rejections == []
    assert len(files) == 3
    captured = [json.loads(f.read_text()) for f in files]
    assert [c["path"] for c in captured] == ["/v1/messages", "/v1/messages", "/v1/messages/count_tokens"]
    assert captured[0]["method"] == "POST" and captured[0]["body"] == subagent
    assert captured[1]["body"] == first_turn
    for entry, file in zip(captured, files, strict=True):
        assert entry["headers"]["x-app"] == "cli" and entry["headers"]["anthropic-version"] == "2023-06-01"
        assert not set(entry["headers"]) & set(SECRETS)
        text = file.read_text()
        assert not any(secret in text for secret in SECRETS.values())
    assert all("-req_ccm_" in f.name for f in files)

    # ccm explain reads a captured file as it is
    explained = subprocess.run([*CCM_COMMAND, "explain", str(tmp_path / "routes.ccm"), str(files[0])],
                               capture_output=True, text=True, cwd=REPO, timeout=60)
    assert explained.returncode == 0, explained.stderr
    assert "quick" in explained.stdout and "subagent" in explained.stdout

    # ... and so does an in-file test
    (tmp_path / "replay.ccm").write_text(ROUTES + f"""
test "the captured subagent request goes to quick" {{
  request file "captures/{files[0].name}"
  expect  quick
}}
test "the captured first turn goes to main" {{
  request file "captures/{files[1].name}"
  expect  main
}}
""")
    checked = check(tmp_path / "replay.ccm", {})
    assert checked.table is not None and not checked.problems, [p.render() for p in checked.problems]
    assert len(checked.table.tests) == 2


def test_capture_keeps_the_latest_files_within_its_bounds(tmp_path: Path) -> None:
    capture = tmp_path / "captures"
    (capture / "keep").mkdir(parents=True)
    mine = capture / "mine.json"
    mine.write_text("{}")  # already there: never removed
    with serve(FakeOpenAI(KEY)) as (url, _):
        env = {"OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": KEY}
        args = ("--capture", str(capture), "--capture-max-files", "3")
        with CcmServer.from_text(tmp_path, ROUTES, env, args=args) as ccm:
            for n in range(6):
                post(ccm.url, {"model": "claude-opus-5-5", "max_tokens": 16,
                               "messages": [{"role": "user", "content": f"request {n}"}]})
            time.sleep(0.3)
            deadline = time.monotonic() + 5
            while len(list(capture.glob("*-req_ccm_*.json"))) != 3 and time.monotonic() < deadline:
                time.sleep(0.05)
    files = sorted(capture.glob("*-req_ccm_*.json"))
    assert [json.loads(f.read_text())["body"]["messages"][0]["content"] for f in files] == [
        "request 3", "request 4", "request 5"]
    assert mine.exists()
