"""`include` and `request file` as a hostile route file uses them (issue 12, item 9): in CI on a pull request,
`include "/proc/self/environ"` printed the environment, keys included; `/dev/zero` was read without limit, a FIFO
hung the check, `../` and `/etc/shadow` were read, and `/health` showed the first token of an included file.

Files a route file names are read only inside its folder (or one named in CCM_INCLUDE_PATH), only when regular
and at most 1 MB (32 MB for a request file), and an included file that does not parse is reported by position:
nothing of its text reaches a diagnostic, `ccm check --format json`, the log or `/health`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ccm.cli.main import main
from tests.fakes import CcmServer

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-ant-SENTINEL-0123456789"
HEAD = ('provider a {\n  type anthropic\n  url "https://api.anthropic.com"\n}\n'
        "model m = a/x\nroute {\n  default -> m\n}\n")


def _check(folder: Path, text: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    (folder / "routes.ccm").write_text(text)
    result = CliRunner().invoke(main, ["check", *args, str(folder / "routes.ccm")],
                                env={"CCM_LEAK_PROBE": SECRET, **(env or {})})
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    inside = tmp_path / "repo"
    inside.mkdir()
    (tmp_path / "outside.ccm").write_text(f'# {SECRET}\nmodel leaked = a/{SECRET.replace("-", "_")}\n')
    return inside


@pytest.mark.parametrize("written", [
    "/proc/self/environ",
    "/etc/shadow",
    "/etc/passwd",
    "../outside.ccm",
    "sub/../../outside.ccm",
])
def test_a_file_outside_the_folder_is_never_read(folder: Path, written: str) -> None:
    code, output = _check(folder, f'include "{written}"\n' + HEAD)
    assert code == 1
    assert f"cannot include `{written}`: it is outside the route file's folder" in output
    assert SECRET not in output and "leaked" not in output


def test_a_symlink_out_of_the_folder_is_refused(folder: Path) -> None:
    (folder / "link.ccm").symlink_to(folder.parent / "outside.ccm")
    code, output = _check(folder, 'include "link.ccm"\n' + HEAD)
    assert code == 1 and "it is outside the route file's folder" in output and SECRET not in output


def test_a_fifo_is_refused_without_hanging(folder: Path) -> None:
    os.mkfifo(folder / "pipe.ccm")
    started = time.monotonic()
    code, output = _check(folder, 'include "pipe.ccm"\n' + HEAD)
    assert code == 1 and "cannot include `pipe.ccm`: it is not a regular file" in output
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("written", ["/dev/zero", "/dev/urandom", "."])
def test_devices_and_folders_are_refused_even_inside_an_include_path(folder: Path, written: str) -> None:
    code, output = _check(folder, f'include "{written}"\n' + HEAD, env={"CCM_INCLUDE_PATH": "/dev"})
    assert code == 1 and f"cannot include `{written}`: it is not a regular file" in output


def test_a_file_over_a_megabyte_is_refused(folder: Path) -> None:
    (folder / "huge.ccm").write_text("# padding\n" * 110_000)
    code, output = _check(folder, 'include "huge.ccm"\n' + HEAD)
    assert code == 1 and "cannot include `huge.ccm`: it is larger than 1 MB" in output


def test_an_include_path_lets_another_folder_in(folder: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "providers.ccm").write_text('provider b {\n  type openai\n  url "http://127.0.0.1:1/v1"\n}\n')
    text = f'include "{shared}/providers.ccm"\n' + HEAD
    assert _check(folder, text)[0] == 1
    code, output = _check(folder, text, env={"CCM_INCLUDE_PATH": f"/nonexistent{os.pathsep}{shared}"})
    assert code == 0, output


NOT_ROUTE_FILES = {
    ".env": f"ANTHROPIC_API_KEY={SECRET}\n",
    "id_rsa": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n",
    "config.json": f'{{"token": "{SECRET}"}}\n',
    "half-route.ccm": f"route {{\n  default -> m\n  {SECRET} !\n}}\n",
    "deep.ccm": "route {\n  " + "(" * 100 + f"{SECRET}\n}}\n",
    "escape.ccm": f'model m2 = a/x {{ force {{ a: "\\q{SECRET}" }} }}\n',
}


@pytest.mark.parametrize("name", NOT_ROUTE_FILES)
@pytest.mark.parametrize("output_format", ["text", "json"])
def test_an_included_file_that_does_not_parse_is_never_quoted(folder: Path, name: str, output_format: str) -> None:
    (folder / name).write_text(NOT_ROUTE_FILES[name])
    code, output = _check(folder, f'include "{name}"\n' + HEAD, "--format", output_format)
    assert code == 1
    assert SECRET not in output and SECRET[:10] not in output
    if output_format == "json":
        (problem,) = json.loads(output[output.index("["):])
        assert problem["file"].endswith(name) and problem["line"] >= 1
        assert problem["message"].startswith("not a route file: syntax error here")
        assert problem["hint"].startswith("included at ")


def test_the_main_file_is_still_quoted(folder: Path) -> None:
    """The user named it: its syntax errors show the line and caret as always."""
    code, output = _check(folder, HEAD + "route {\n  websearch opus\n}\n")
    assert code == 1 and "websearch opus" in output and "^" in output


@pytest.mark.parametrize("setup, written, message", [
    (lambda f: None, "../outside.ccm", "it is outside the route file's folder"),
    (lambda f: os.mkfifo(f / "pipe.json"), "pipe.json", "it is not a regular file"),
    (lambda f: (f / "big.json").write_bytes(b" " * (33 * 1024 * 1024)), "big.json", "it is larger than 32 MB"),
    (lambda f: (f / "env.json").write_text(f"TOKEN={SECRET}\n"), "env.json", "is not valid JSON (line 1, column 1)"),
], ids=["outside", "fifo", "too large", "not JSON"])
def test_request_files_follow_the_same_rules(
    folder: Path, setup: Callable[[Path], object], written: str, message: str
) -> None:
    setup(folder)
    code, output = _check(folder, HEAD + f'test "t" {{\n  request file "{written}"\n  expect m\n}}\n')
    assert code == 1 and message in output and SECRET not in output


def test_health_never_shows_an_included_file(tmp_path: Path) -> None:
    """On a real `ccm run`: a save that includes a non-route file is rejected, and neither /health nor the log
    holds anything of that file."""
    (tmp_path / ".env").write_text(f"ANTHROPIC_API_KEY={SECRET}\n")
    with CcmServer.from_text(tmp_path, HEAD, {}) as ccm:
        (tmp_path / "routes.ccm").write_text('include ".env"\n' + HEAD)
        deadline = time.monotonic() + 20
        while True:
            health = httpx.get(f"{ccm.url}/health", timeout=5).json()
            if health["reload"]["last_error"] is not None:
                break
            assert time.monotonic() < deadline, "the reload was not rejected"
            time.sleep(0.05)
        assert health["reload"]["last_error"]["message"].endswith(
            ".env:1:1: error: not a route file: syntax error here (an included file that does not parse is not quoted)")
        assert SECRET not in json.dumps(health) and "ANTHROPIC_API_KEY" not in json.dumps(health)
        assert "not a route file" in ccm.logs() and SECRET not in ccm.logs()
