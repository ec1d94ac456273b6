"""`key file("/run/secrets/…")`: secrets handed over as files (Docker, Kubernetes), read when the table is resolved —
at start and on every reload — with the trailing newline stripped, shown as `file(PATH)` and never as their
contents; a missing or unreadable file is reported like an unset variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ccm.compile.check import check
from ccm.core.runtime import build_runtime
from ccm.diagnostics import UNSET_VARIABLE
from ccm.table import FileRef
from ccm.upstream.client import resolve_endpoint
from tests.conftest import REPO

SECRET = "secret-from-a-file"
ROUTES = """
settings {
  auth file("inbound")
}
provider openai {
  type    openai
  url     "https://api.openai.com/v1"
  key     file("/SECRETS/openai")
  headers { "x-team-token" = file("team") }
}
model gpt = openai/gpt-5 {
  max_output 32k
}
route {
  default -> gpt
}
"""


def route_file(tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    routes = tmp_path / "routes.ccm"
    routes.write_text(ROUTES.replace("/SECRETS", str(secrets)))
    (tmp_path / "inbound").write_text("inbound-from-file\n")
    (tmp_path / "team").write_text("team-token")
    return routes


def test_a_secret_file_is_read_with_its_newline_stripped_and_shown_by_path(tmp_path: Path) -> None:
    routes = route_file(tmp_path)
    (tmp_path / "secrets" / "openai").write_text(SECRET + "\n")
    checked = check(routes, {})
    assert checked.table is not None and checked.warnings == ()
    provider = checked.table.providers["openai"]
    assert provider.key == FileRef(path=str(tmp_path / "secrets" / "openai"))
    assert isinstance(provider.headers[0][1], FileRef)
    assert provider.headers[0][1].path == str(tmp_path / "team")  # relative to the route file's folder
    endpoint = resolve_endpoint(provider, {})
    assert ("authorization", f"Bearer {SECRET}") in endpoint.headers
    assert ("x-team-token", "team-token") in endpoint.headers
    assert endpoint.missing is None
    shown = checked.table.model_dump_json()
    assert f"file({tmp_path / 'secrets' / 'openai'})" in shown and SECRET not in shown
    runtime, _ = build_runtime(checked.table, {})
    assert runtime.auth_keys == (b"inbound-from-file",)
    assert runtime.redactor.redact(f"echoed {SECRET}") == "echoed [redacted]"


def test_a_missing_file_is_reported_like_an_unset_variable(tmp_path: Path) -> None:
    routes = route_file(tmp_path)
    checked = check(routes, {})
    assert checked.table is not None  # not an error: the file may appear where ccm runs
    (warning,) = checked.warnings
    assert warning.code == UNSET_VARIABLE and warning.source_line is None
    assert warning.message == f"file `{tmp_path / 'secrets' / 'openai'}` cannot be read"
    endpoint = resolve_endpoint(checked.table.providers["openai"], {})
    assert endpoint.missing == f"file {tmp_path / 'secrets' / 'openai'} cannot be read (or is empty)"


def test_a_reload_reads_the_file_again(tmp_path: Path) -> None:
    routes = route_file(tmp_path)
    secret = tmp_path / "secrets" / "openai"
    secret.write_text("sk-first\n")
    checked = check(routes, {})
    assert checked.table is not None
    first, _ = build_runtime(checked.table, {})
    secret.write_text("sk-rotated\n")
    second, retired = build_runtime(checked.table, {}, previous=first)
    assert ("authorization", "Bearer sk-rotated") in second.providers["openai"].endpoint.headers
    assert retired == [first.providers["openai"]]  # a new key: a new pool


def test_file_is_for_secrets_only(tmp_path: Path) -> None:
    routes = tmp_path / "routes.ccm"
    routes.write_text(ROUTES.replace('url     "https://api.openai.com/v1"', 'url     file("url")'))
    checked = check(routes, {})
    assert checked.table is None
    assert any("`file(...)` holds a secret" in d.message for d in checked.problems)


def test_ccm_table_and_check_never_print_the_contents(tmp_path: Path) -> None:
    routes = route_file(tmp_path)
    (tmp_path / "secrets" / "openai").write_text(SECRET)
    ccm = [sys.executable, "-c", "from ccm.cli.main import main; main()"]
    for command in (["table", str(routes)], ["check", str(routes)], ["models", str(routes)]):
        done = subprocess.run([*ccm, *command], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr and "inbound-from-file" not in done.stdout + done.stderr
