"""`ccm.capture.Capture` on its own: the hook is installed only while capturing, credentials are dropped, the
byte bound removes the oldest files, a full queue drops rather than waits; a folder that cannot be used changes
nothing, and a new start leaves the files of the one before alone."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import pytest

from ccm.capture import Capture, CaptureError, RequestHook, _Run, capture_folder, default_folder, redacted_headers


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
    pending: queue.Queue[object] = queue.Queue(1)
    capture._run = _Run(Path("unused"), pending)  # type: ignore[arg-type]  # as `start` makes it, with no writer
    capture.hook("req_ccm_1", "/v1/messages", b"{}", {})
    capture.hook("req_ccm_2", "/v1/messages", b"{}", {})
    assert capture.status()["dropped"] == 1 and pending.qsize() == 1


def test_a_new_start_counts_afresh_and_leaves_the_earlier_files_alone(tmp_path: Path) -> None:
    capture = Capture(lambda hook: None, max_files=1)
    capture.start(tmp_path / "first")
    capture.hook("req_ccm_1", "/v1/messages", b"{}", {})
    capture.start(tmp_path / "second")  # stops the first: its queued request is written there
    capture.hook("req_ccm_2", "/v1/messages", b"{}", {})
    capture.hook("req_ccm_3", "/v1/messages", b"{}", {})
    capture.stop()
    assert [p.name[-14:] for p in (tmp_path / "first").glob("*.json")] == ["req_ccm_1.json"]
    assert [p.name[-14:] for p in (tmp_path / "second").glob("*.json")] == ["req_ccm_3.json"]
    status = capture.status()
    assert status["directory"] == str(tmp_path / "second") and (status["captured"], status["files"]) == (2, 1)
    assert (tmp_path / "second").stat().st_mode & 0o777 == 0o700


def test_a_folder_that_cannot_be_used_changes_nothing(tmp_path: Path) -> None:
    capture = Capture(lambda hook: None)
    capture.start(tmp_path / "running")
    (tmp_path / "file").write_text("not a folder")
    for folder, says in ((tmp_path / "file", "is a file, not a folder"),
                         (tmp_path / "file" / "below", "cannot create")):
        with pytest.raises(CaptureError, match=says):
            capture.start(folder)
        assert capture.active and capture.status()["directory"] == str(tmp_path / "running")
    assert not (tmp_path / "file" / "below").exists()
    capture.stop()


@pytest.mark.parametrize(("text", "says"), [("", "name the folder"), ("   ", "name the folder"),
                                            ("captures", "relative path"), ("/tmp/a\x00b", "NUL")])
def test_a_typed_folder_must_be_a_whole_path(text: str, says: str) -> None:
    with pytest.raises(CaptureError, match=says):
        capture_folder(text)


def test_typed_folders_and_the_default(tmp_path: Path) -> None:
    assert capture_folder(" /srv/capture ") == Path("/srv/capture")
    assert capture_folder("~/capture") == Path.home() / "capture"
    assert default_folder({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "ccm" / "capture"
    assert default_folder({"HOME": "/home/someone"}) == Path("/home/someone/.local/state/ccm/capture")
