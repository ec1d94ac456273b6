"""Keys never enter an imported file: every secret becomes an `env("NAME")` reference.

    $DEEPSEEK_API_KEY, ${DEEPSEEK_API_KEY}, os.environ/DEEPSEEK_API_KEY  → env("DEEPSEEK_API_KEY")
    a literal key                          → env("<PROVIDER>_API_KEY"), and a warning to export it (never the key)
    a literal key of a loopback provider   → no key (a local server rarely checks one), and a note saying so

The literal is dropped on the floor: it is neither written nor printed, so a report pasted into an issue is safe.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ccm.frozen import frozen
from ccm.importers.plan import Env, env_name

_WHOLE_REFERENCE = re.compile(r"\$\{([^}]+)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_ANY_REFERENCE = re.compile(r"\$\{[^}]+\}|\$[A-Z_][A-Z0-9_]*")


def env_reference(text: str) -> str | None:
    """The variable a whole value names (`$VAR`, `${VAR}`, `os.environ/VAR`), or None."""
    text = text.strip()
    if text.startswith("os.environ/"):
        return text.removeprefix("os.environ/") or None
    found = _WHOLE_REFERENCE.fullmatch(text)
    if found:
        return found.group(1) or found.group(2)
    return None


def has_interpolation(text: str) -> bool:
    """Whether a value mixes `$VAR` references into other text (CCR expands them; ccm's `env()` is a whole value)."""
    return _ANY_REFERENCE.search(text) is not None


def is_loopback(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback or host == "0.0.0.0"
    except ValueError:
        return False


@frozen
class KeyChoice:
    key: Env | None
    warning: str | None  # what the user must do, or None when nothing changes for them


def provider_key(raw: str | None, provider: str, url: str | None, *, default_env: str | None = None) -> KeyChoice:
    """The key a provider gets in the route file, from what the source config wrote (None: nothing)."""
    variable = f"{env_name(provider)}_API_KEY"
    if raw is None or raw == "":
        if default_env is not None:
            return KeyChoice(Env(default_env), None)
        return KeyChoice(None, None)
    named = env_reference(raw)
    if named is not None:
        return KeyChoice(Env(named), None)
    if has_interpolation(raw):
        return KeyChoice(Env(variable), f"provider `{provider}`: its key mixes `$VAR` references with text; ccm reads "
                                        f"a whole key from one variable: export {variable}")
    if url is not None and is_loopback(url):
        return KeyChoice(None, f"provider `{provider}`: its key was written in the file; it is a local server, which "
                               f"rarely checks one, so none is sent (add `key env(\"{variable}\")` if it does)")
    return KeyChoice(Env(variable), f"provider `{provider}`: its key was written in the file; it is not copied: "
                                    f"export {variable} with it")


def router_key(raw: str, what: str) -> tuple[Env, str | None]:
    """The key clients must send to ccm (`settings { auth … }`), from the old router's own inbound key."""
    named = env_reference(raw)
    if named is not None:
        return Env(named), None
    return Env("CCM_API_KEY"), (f"{what} (the key clients send to the router) was written in the file; it is not "
                                f"copied: export CCM_API_KEY with it, and `ccm env`/`ccm code` hand it to Claude Code")
