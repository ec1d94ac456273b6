"""`ccm.capture.Capture` on its own: the hook is installed only while capturing, credentials are dropped, the
byte bound removes the oldest files, a full queue drops rather than waits."""

from __future__ import annotations

import json
import queue
from pathlib import Path

from ccm.capture import Capture, RequestHook, redacted_headers


def test_redacted_headers_drop_every_credential() -> None:
    headers = {"x-api-key": "a", "authorization": "b", "x-ccm-key": "c", "cookie": "d", "proxy-authorization": "e",
               "x-goog-api-key": "f", "x-some-token": "g", "client-secret": "h", "anthropic-version": "2023-06-01",
               "user-agent": "claude-cli/2.1.328 (external, sdk-cli)", "x-app": "cli", "x-session-affinity": "i"}
    assert redacted_headers(headers) == {"anthropic-version": "2023-06-01",
                                         "user-agent": "claude-cli/2.1.328 (external, sdk-cli)", "x-app": "cli"}


def test_the_hook_is_there_only_while_capturing(tmp_path: Path) -> None:
    installed: list[RequestHook | None] = []
    capture = Capture(installed.append)
    assert not capture.active and installed == []
    capture.start(tmp_path)
    assert capture.active and installed[-1] == capture.hook
    capture.hook("req_ccm_1", "/v1/messages", b'{"model":"m","messages":[]}', {"x-api-key": "k", "x-app": "cli"})
    capture.stop()
    assert installed[-1] is None and not capture.active
    [file] = tmp_path.glob("*.json")
    assert json.loads(file.read_text()) == {"method": "POST", "path": "/v1/messages", "headers": {"x-app": "cli"},
                                            "body": {"model": "m", "messages": []}}
    assert capture.status()["captured"] == 1 and capture.status()["files"] == 1


def test_the_byte_bound_removes_the_oldest(tmp_path: Path) -> None:
    capture = Capture(lambda hook: None, max_files=100, max_bytes=500)
    capture.start(tmp_path)
    body = b'{"text":"' + b"x" * 150 + b'"}'
    for n in range(6):
        capture.hook(f"req_ccm_{n}", "/v1/messages", body, {})
    capture.stop()
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(names) == 2 and names[-1].endswith("req_ccm_5.json") and capture.status()["bytes"] <= 500


def test_a_full_queue_drops_instead_of_waiting() -> None:
    capture = Capture(lambda hook: None)
    capture._queue = queue.Queue(1)  # as `start` makes it, with no writer taking from it
    capture.hook("req_ccm_1", "/v1/messages", b"{}", {})
    capture.hook("req_ccm_2", "/v1/messages", b"{}", {})
    assert capture.dropped == 1 and capture._queue.qsize() == 1
