"""Keys written literally in a route file (issue 12, item 13): `ccm table` printed them, though the README says it
never shows values. The fields that hold credentials (a provider's `key`, the inbound `auth` keys, a credential
header's value) serialise a literal redacted wherever the table is serialised, the compiler warns at each one (its
quoted line redacted too), and the router still sends the real value upstream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccm.cli.main import main
from ccm.compile import compile_file
from ccm.table import EnvRef, Literal_, Provider, Settings, is_credential_header, redacted
from ccm.upstream.client import resolve_endpoint

pytestmark = pytest.mark.timeout(60)

KEY = "sk-ant-literal-provider-key-0001"
INBOUND = "ccm-literal-inbound-key-0002"
BEARER = "proxy-literal-bearer-0003"
GATEWAY = "gw-literal-header-key-0004"
SECRETS = (KEY, INBOUND, BEARER, GATEWAY)
ROUTES = f"""\
settings {{
  auth "{INBOUND}" env("CCM_API_KEY")
}}

provider anthropic {{
  type    anthropic
  url     "https://api.anthropic.com"
  key     "{KEY}"
  headers {{ "Proxy-Authorization": "Bearer {BEARER}", "x-gateway-key": "{GATEWAY}", "X-Title": "my-title" }}
}}

model main = anthropic/claude-main

route {{
  default -> main
}}
"""


@pytest.fixture
def route_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.ccm"
    path.write_text(ROUTES)
    return path


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"CCM_API_KEY": "from-env"})
    assert result.exit_code == 0, result.output
    return result.output


def test_ccm_table_never_shows_a_literal_key(route_file: Path) -> None:
    table = json.loads(_run("table", str(route_file)))
    provider = table["providers"]["anthropic"]
    assert provider["key"] == "sk-…(redacted)"
    assert provider["headers"] == [["Proxy-Authorization", "Bearer pro…(redacted)"],
                                   ["x-gateway-key", "gw-…(redacted)"], ["X-Title", "my-title"]]
    assert table["settings"]["auth"] == ["ccm…(redacted)", "env(CCM_API_KEY)"]
    assert provider["url"] == "https://api.anthropic.com"  # not a secret: shown
    text = json.dumps(table)
    assert not any(secret in text for secret in SECRETS)


def test_ccm_explain_and_check_never_show_a_literal_key(route_file: Path, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "main", "max_tokens": 1, "messages": []}))
    for output in (_run("explain", str(route_file), str(request)),
                   _run("explain", "--format", "json", str(route_file), str(request)),
                   _run("check", str(route_file)), _run("check", "--format", "json", str(route_file))):
        assert not any(secret in output for secret in SECRETS), output


def test_the_compiler_warns_at_every_literal_credential(route_file: Path) -> None:
    warnings = compile_file(route_file, {"CCM_API_KEY": "x"}).warnings
    written = [w for w in warnings if "keys belong in the environment" in w.message]
    assert [(w.line, w.hint) for w in written] == [
        (2, 'auth env("CCM_API_KEY")'),
        (8, 'key env("ANTHROPIC_API_KEY")'),
        (9, '"Proxy-Authorization": env("PROXY_AUTHORIZATION")'),
        (9, '"x-gateway-key": env("X_GATEWAY_KEY")'),
    ]
    rendered = "\n".join(w.render() for w in written)
    assert not any(secret in rendered for secret in SECRETS)
    assert '"sk-***' in rendered and '"Bearer pro***' in rendered


def test_the_real_value_still_goes_upstream(route_file: Path) -> None:
    table = compile_file(route_file, {}).table
    assert table is not None
    headers = dict(resolve_endpoint(table.providers["anthropic"], {}).headers)
    assert headers["x-api-key"] == KEY
    assert headers["proxy-authorization"] == f"Bearer {BEARER}"


def test_a_hand_built_or_copied_provider_is_redacted_too() -> None:
    """The type says it: a literal in `key` is redacted however the provider was made (model_copy skips validation)."""
    base = Provider(name="p", type="openai", url=Literal_(value="http://127.0.0.1:1"), auth="bearer")
    copied = base.model_copy(update={"key": Literal_(value=KEY),
                                     "headers": (("Authorization", Literal_(value=BEARER)),)})
    assert KEY not in copied.model_dump_json() and BEARER not in copied.model_dump_json()
    assert KEY not in str(copied.model_dump(mode="json"))
    assert Settings(auth=(Literal_(value=INBOUND),)).model_dump(mode="json")["auth"] == ["ccm…(redacted)"]
    assert Settings(auth=(EnvRef(name="K"),)).model_dump(mode="json")["auth"] == ["env(K)"]


@pytest.mark.parametrize("name, value, credential", [
    ("Authorization", "x", True), ("x-api-key", "x", True), ("X-Portkey-Api-Key", "x", True),
    ("helicone-auth", "x", True), ("Cookie", "a=b", True), ("X-Anything", "Bearer abc", True),
    ("X-Title", "ccm", False), ("HTTP-Referer", "https://github.com/ccm", False), ("anthropic-beta", "x", False),
])
def test_which_headers_carry_credentials(name: str, value: str, credential: bool) -> None:
    assert is_credential_header(name, value) is credential


def test_redaction_shows_no_more_than_the_kind_of_key() -> None:
    assert redacted("short-secret") == "(redacted)"
    assert redacted("AIzaSyA-0123456789abcdef") == "AIz…(redacted)"
    assert redacted("Bearer sk-0123456789abcdef") == "Bearer sk-…(redacted)"
