"""What Claude Code is given to talk to ccm, for `ccm code` (an environment) and `ccm env` (shell exports).

    ANTHROPIC_BASE_URL        the router
    ANTHROPIC_CUSTOM_HEADERS  `x-ccm-key: …`, ccm's own inbound key, when the route file declares `auth`: a header
                              of its own, so x-api-key and Authorization stay the user's credentials
    ANTHROPIC_API_KEY         `ccm-local`, only when the user has no credentials of their own (Claude Code will not
                              start without one); an API key or a Claude login the user has is never replaced

The user's own credentials: ANTHROPIC_API_KEY (other than the placeholder), ANTHROPIC_AUTH_TOKEN,
CLAUDE_CODE_OAUTH_TOKEN, or a Claude Code login (`.credentials.json` in ${CLAUDE_CONFIG_DIR:-~/.claude}, or an
`oauthAccount` / `primaryApiKey` in its `.claude.json`, which is where Claude Code 2.1.328 keeps them).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path

from ccm.table import CCM_KEY_HEADER, PLACEHOLDER_KEY, EnvRef, FileRef, RoutingTable, resolve

OWN_CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
CUSTOM_HEADERS = "ANTHROPIC_CUSTOM_HEADERS"


def has_own_credentials(environ: Mapping[str, str], home: Path) -> bool:
    """Whether Claude Code, started with `environ`, has credentials of the user's own to send."""
    if any(environ.get(name) not in (None, "", PLACEHOLDER_KEY) for name in OWN_CREDENTIAL_VARIABLES):
        return True
    config_dir = Path(environ["CLAUDE_CONFIG_DIR"]) if environ.get("CLAUDE_CONFIG_DIR") else home / ".claude"
    if (config_dir / ".credentials.json").is_file():
        return True
    for config in (config_dir / ".claude.json", home / ".claude.json"):
        try:
            saved = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and ("oauthAccount" in saved or "primaryApiKey" in saved):
            return True
    return False


def claude_environment(table: RoutingTable | None, url: str, environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """The environment `ccm code` runs claude in: `environ` pointed at ccm at `url`."""
    env = {**environ, "ANTHROPIC_BASE_URL": url}
    key = _inbound_key(table, environ)
    if key is not None:
        kept = _other_headers(environ.get(CUSTOM_HEADERS, ""))
        env[CUSTOM_HEADERS] = "\n".join([*kept, f"{CCM_KEY_HEADER}: {key}"])
    if not has_own_credentials(environ, home):
        env["ANTHROPIC_API_KEY"] = PLACEHOLDER_KEY
    return env


def shell_exports(table: RoutingTable | None, url: str, environ: Mapping[str, str], home: Path) -> list[str]:
    """`ccm env`'s lines: the same settings as `claude_environment`, with keys as references to their variables
    (`"${CCM_API_KEY}"`) so that nothing secret is printed."""
    lines = [f"export ANTHROPIC_BASE_URL={shlex.quote(url)}"]
    if table is not None and table.settings.auth:
        value = table.settings.auth[0]
        if isinstance(value, EnvRef):
            default = f":-{value.default}" if value.default is not None else ""
            header = f'"{CCM_KEY_HEADER}: ${{{value.name}{default}}}"'
        elif isinstance(value, FileRef):  # read by the shell, so not printed here either
            header = f'"{CCM_KEY_HEADER}: $(cat {shlex.quote(value.path)})"'
        else:
            header = shlex.quote(f"{CCM_KEY_HEADER}: {value.value}")
        lines.append(f"export {CUSTOM_HEADERS}={header}")
    if not has_own_credentials(environ, home):
        lines.append(f"export ANTHROPIC_API_KEY={PLACEHOLDER_KEY}")
    return lines


def replaced_headers(environ: Mapping[str, str]) -> list[str]:
    """The names of the headers in the shell's ANTHROPIC_CUSTOM_HEADERS that `ccm env`'s line would replace."""
    return [line.partition(":")[0].strip() for line in _other_headers(environ.get(CUSTOM_HEADERS, ""))]


def _inbound_key(table: RoutingTable | None, environ: Mapping[str, str]) -> str | None:
    if table is None:
        return None
    return next((key for key in (resolve(v, environ) for v in table.settings.auth) if key), None)


def _other_headers(custom: str) -> list[str]:
    """The lines of an ANTHROPIC_CUSTOM_HEADERS value other than ccm's own key."""
    return [line for line in custom.splitlines()
            if line.strip() and line.partition(":")[0].strip().lower() != CCM_KEY_HEADER]
