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
    {"ANTHROPIC_API_KEY": "sk-ant-own"}, {"ANTHROPIC_AUTH_TOKEN": "t"}, {"CLAUDE_CODE_OAUTH_TOKEN": "oauth-token-x"},
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


WINDOWS = ROUTES + """
provider deepseek {
  type openai
  url  "https://api.deepseek.com/v1"
  key  env("DEEPSEEK_API_KEY")
}
model coder = deepseek/deepseek-chat {
  context    128k
  max_output 8k
}
model reasoner = deepseek/deepseek-reasoner {
  context    64k
  max_output 8k
}
model sonnet = anthropic/claude-sonnet-5-5 {
  context 32k
}
"""


def test_claude_code_is_given_the_window_of_the_models_it_does_not_know(tmp_path):
    routes = tmp_path / "routes.ccm"
    routes.write_text(WINDOWS)
    checked = check(routes, {})
    assert checked.table is not None
    own = {"ANTHROPIC_API_KEY": "sk-ant-own"}
    # `--model coder`: that alias's window
    env = claude_environment(checked.table, URL, own, tmp_path, ["--model", "coder", "-p", "hi"])
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "128000"
    # otherwise the smallest among the aliases Claude Code does not know (`sonnet` it knows as its own)
    assert claude_environment(checked.table, URL, own, tmp_path)["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "64000"
    assert "export CLAUDE_CODE_MAX_CONTEXT_TOKENS=64000" in shell_exports(checked.table, URL, own, tmp_path)
    # the user's own setting wins
    mine = {**own, "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "50000"}
    assert claude_environment(checked.table, URL, mine, tmp_path)["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "50000"
    assert not any("MAX_CONTEXT" in line for line in shell_exports(checked.table, URL, mine, tmp_path))
