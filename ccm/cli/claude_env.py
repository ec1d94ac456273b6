"""What Claude Code is given to talk to ccm, for `ccm code` (an environment) and `ccm env` (shell exports).

    ANTHROPIC_BASE_URL        the router
    ANTHROPIC_CUSTOM_HEADERS  `x-ccm-key: …`, ccm's own inbound key, when the route file declares `auth`: a header
                              of its own, so x-api-key and Authorization stay the user's credentials
    ANTHROPIC_API_KEY         `ccm-local`, only when the user has no credentials of their own (Claude Code will not
                              start without one); an API key or a Claude login the user has is never replaced
    CLAUDE_CODE_MAX_CONTEXT_TOKENS  the window of the routed models Claude Code does not know (`context_window`),
                              unless the user set it: without it, 2.1.328 assumes 1M tokens and compacts far too late

The user's own credentials: ANTHROPIC_API_KEY (other than the placeholder), ANTHROPIC_AUTH_TOKEN,
CLAUDE_CODE_OAUTH_TOKEN, or a Claude Code login (`.credentials.json` in ${CLAUDE_CONFIG_DIR:-~/.claude}, or an
`oauthAccount` / `primaryApiKey` in its `.claude.json`, which is where Claude Code 2.1.328 keeps them).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from ccm.table import CCM_KEY_HEADER, PLACEHOLDER_KEY, EnvRef, FileRef, RoutingTable, resolve

OWN_CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
WINDOW_VARIABLE = "CLAUDE_CODE_MAX_CONTEXT_TOKENS"
CLAUDE_ALIASES = frozenset({"opus", "sonnet", "haiku", "opusplan", "default", "best"})
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


def claude_environment(table: RoutingTable | None, url: str, environ: Mapping[str, str], home: Path,
                       claude_args: Sequence[str] = ()) -> dict[str, str]:
    """The environment `ccm code` runs claude in: `environ` pointed at ccm at `url`."""
    env = {**environ, "ANTHROPIC_BASE_URL": url}
    window = context_window(table, claude_args)
    if window is not None and not environ.get(WINDOW_VARIABLE):
        env[WINDOW_VARIABLE] = str(window)
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
    window = context_window(table, ())
    if window is not None and not environ.get(WINDOW_VARIABLE):
        lines.append(f"export {WINDOW_VARIABLE}={window}")
    return lines


def context_window(table: RoutingTable | None, claude_args: Sequence[str]) -> int | None:
    """What Claude Code should take as the window of a model it does not know (CLAUDE_CODE_MAX_CONTEXT_TOKENS, which
    2.1.328 reads for any unrecognised model id instead of assuming 1M tokens): the declared `context` of the alias
    `--model` names, else the smallest `context` among the aliases Claude Code would not recognise (it may be switched
    to any of them with /model: compacting early is safe, late is not). None when the table declares none."""
    if table is None:
        return None
    named = _model_argument(claude_args)
    if named is not None and named in table.models and table.models[named].context is not None:
        return table.models[named].context
    windows = [model.context for name, model in table.models.items()
               if model.declared and model.context is not None and not _claude_knows(name)]
    return min(windows) if windows else None


def _model_argument(claude_args: Sequence[str]) -> str | None:
    for index, word in enumerate(claude_args):
        if word == "--model" and index + 1 < len(claude_args):
            return claude_args[index + 1]
        if word.startswith("--model="):
            return word.partition("=")[2]
    return None


def _claude_knows(name: str) -> bool:
    """Names Claude Code resolves to its own models (and their windows) before they reach ccm."""
    return name.removesuffix("[1m]") in CLAUDE_ALIASES or name.startswith("claude-")


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
