"""What `ccm code` and `ccm env` give Claude Code: never a placeholder over the user's own credentials, ccm's own
key in `x-ccm-key` only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccm.cli.claude_env import claude_environment, has_own_credentials, shell_exports
from ccm.compile.check import check

URL = "http://127.0.0.1:4000"
ROUTES = """
provider anthropic {
  type anthropic
  url  "https://api.anthropic.com"
  key  env("ANTHROPIC_API_KEY") or client
}
model opus = anthropic/claude-opus-5-5
route {
  default -> opus
}
"""


def table(tmp_path: Path, auth: bool):
    routes = tmp_path / "routes.ccm"
    routes.write_text(('settings {\n  auth env("CCM_INBOUND")\n}\n' if auth else "") + ROUTES)
    checked = check(routes, {})
    assert checked.table is not None
    return checked.table


@pytest.mark.parametrize("environ", [
    {"ANTHROPIC_API_KEY": "sk-ant-own"}, {"ANTHROPIC_AUTH_TOKEN": "t"}, {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-x"},
])
def test_credentials_in_the_environment_are_the_users(tmp_path, environ):
    assert has_own_credentials(environ, tmp_path)
    env = claude_environment(table(tmp_path, auth=False), URL, environ, tmp_path)
    assert env == {**environ, "ANTHROPIC_BASE_URL": URL}
    assert shell_exports(table(tmp_path, auth=False), URL, environ, tmp_path) == [f"export ANTHROPIC_BASE_URL={URL}"]


def test_a_claude_login_on_disk_is_the_users(tmp_path):
    assert not has_own_credentials({}, tmp_path)
    assert not has_own_credentials({"ANTHROPIC_API_KEY": "ccm-local"}, tmp_path)  # an earlier `ccm env`'s
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text("{}")
    assert has_own_credentials({}, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / ".claude.json").write_text(json.dumps({"oauthAccount": {"accountUuid": "u"}}))
    assert has_own_credentials({}, other)
    assert has_own_credentials({"CLAUDE_CONFIG_DIR": str(tmp_path / ".claude")}, tmp_path / "nowhere")


def test_the_placeholder_only_without_credentials_and_the_inbound_key_in_its_own_header(tmp_path):
    environ = {"CCM_INBOUND": "inbound-secret", "ANTHROPIC_CUSTOM_HEADERS": "x-team: web\nx-ccm-key: stale"}
    env = claude_environment(table(tmp_path, auth=True), URL, environ, tmp_path)
    assert env["ANTHROPIC_API_KEY"] == "ccm-local"
    assert env["ANTHROPIC_CUSTOM_HEADERS"] == "x-team: web\nx-ccm-key: inbound-secret"
    lines = shell_exports(table(tmp_path, auth=True), URL, environ, tmp_path)
    assert lines == [f"export ANTHROPIC_BASE_URL={URL}",
                     'export ANTHROPIC_CUSTOM_HEADERS="x-ccm-key: ${CCM_INBOUND}"',
                     "export ANTHROPIC_API_KEY=ccm-local"]
    assert "inbound-secret" not in "\n".join(lines)
