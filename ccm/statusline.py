"""`ccm statusline`: the line Claude Code shows under its prompt (its `statusLine` setting), from the router.

Claude Code runs the command whenever the conversation changes, writes a JSON object on its stdin (`session_id`,
`model{id, display_name}`, `cost{…}`, `context_window{…}`, `workspace{…}`, …) and shows the first line printed. This
reads that object — permissively: any field may be missing, of another type, or new — asks the running router what
served the session's last request (`GET /ccm/sessions/{session_id}`, `ccm.sessions`) and prints one line:

    ccm coder ← subagent · deepseek/deepseek-chat · 12.3k in (8.1k cached) / 456 out · $0.0042 · session $0.42

the model alias and the rule that routed to it, the deployment that served, the last request's tokens, its cost at
the route file's price (when the model has one) and the session's cost from the ledger (when there is one: Claude
Code's own `cost.total_cost_usd` is a list-price estimate, wrong for routed models, and is not shown). Without a
router it says so (`ccm: no router at 127.0.0.1:2260`), and a session with no request yet says that; it never fails
(exit 0, always one line), since a failing command blanks Claude Code's status line.

The router is `ANTHROPIC_BASE_URL` when it names this machine (`ccm code` sets it for claude, whose environment the
command inherits), else `--url`, else 127.0.0.1:2260; the key is the `x-ccm-key` line of
`ANTHROPIC_CUSTOM_HEADERS`, else `ANTHROPIC_API_KEY` / `ANTHROPIC_AUTH_TOKEN` (what Claude Code sends to ccm).
One fresh Python process per update: this module imports only the standard library's json, os, socket, sys, time
and urllib.parse (not urllib.request: its import alone takes ~40 ms), and waits at most `TIMEOUT` for the router.
Installed by `ccm code --statusline` as `PYTHON -I -S …/ccm/statusline.py`: no site packages to set up either,
~15 ms to a line (docs/statusline.md).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from urllib.parse import quote, urlsplit

TYPE_CHECKING = False  # typing's own import costs ~3 ms of a line that must take under 50
if TYPE_CHECKING:
    from typing import Any

DEFAULT_URL = "http://127.0.0.1:2260"
TIMEOUT = 0.3  # seconds: Claude Code refreshes the line at most every 300 ms
MAX_STDIN = 1 << 20


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[2:] if argv is None else argv
    url = _option(args, "--url")
    try:
        raw = sys.stdin.buffer.read(MAX_STDIN) if not sys.stdin.isatty() else b""
    except (OSError, ValueError):
        raw = b""
    try:
        line = render(_parse(raw), url)
    except Exception as error:  # noqa: BLE001 - the status line must never break Claude Code's
        line = f"ccm: statusline error ({type(error).__name__})"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


def render(status: dict[str, Any], url: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The one line for Claude Code's status JSON `status` (already parsed; may be empty)."""
    env = os.environ if environ is None else environ
    base = router_url(url, env)
    claude_model = _text(_get(status, "model", "display_name")) or _text(_get(status, "model", "id"))
    session = _text(status.get("session_id"))
    if not session:
        return _join("ccm", _host(base), claude_model and f"claude: {claude_model}", "no session yet")
    answer, problem = _ask(base, session, env)
    if answer is None:
        return _join(f"ccm: {problem}", claude_model and f"claude: {claude_model}")
    last = answer.get("last")
    if not isinstance(last, dict):
        return _join("ccm", "no request from this session yet", claude_model and f"claude: {claude_model}")
    return describe(answer, last)


def describe(answer: dict[str, Any], last: dict[str, Any]) -> str:
    model = _text(last.get("model")) or "?"
    rule = _text(last.get("rule"))
    head = f"ccm {model}" + (f" ← {rule}" if rule else "")
    provider, upstream = _text(last.get("provider")), _text(last.get("upstream_model"))
    deployment = f"{provider}/{upstream}" if provider and upstream else _text(last.get("target"))
    parts = [head, deployment]
    usage = last.get("usage")
    if isinstance(usage, dict):
        fresh = _int(usage.get("input_tokens"))
        read, write = _int(usage.get("cache_read_input_tokens")), _int(usage.get("cache_creation_input_tokens"))
        total = fresh + read + write
        cached = f" ({_tokens(read)} cached)" if read else ""
        estimated = "~" if last.get("usage_estimated") else ""
        parts.append(f"{estimated}{_tokens(total)} in{cached} / {_tokens(_int(usage.get('output_tokens')))} out")
    status = last.get("status")
    if isinstance(status, int) and status >= 400:
        parts.append(f"error {status}" + (f" {last['error']}" if isinstance(last.get("error"), str) else ""))
    elif last.get("outcome") in ("truncated", "client_closed"):
        parts.append(str(last["outcome"]).replace("_", " "))
    cost = last.get("cost_usd")
    if isinstance(cost, int | float):
        parts.append(_usd(cost))
    session_cost = answer.get("session_cost_usd")
    if isinstance(session_cost, int | float):
        parts.append(f"session {_usd(session_cost)}")
    return _join(*parts)


def router_url(url: str | None, environ: Any) -> str:
    if url:
        return url.rstrip("/")
    base = str(environ.get("ANTHROPIC_BASE_URL") or "").rstrip("/")
    host = urlsplit(base).hostname or ""
    if base.startswith(("http://", "https://")) and (host in ("localhost", "::1") or host.startswith("127.")):
        return base
    return DEFAULT_URL


def router_key(environ: Any) -> tuple[bytes, str]:
    """The key Claude Code presents to ccm, and the header for it: ccm's own `x-ccm-key` line of
    ANTHROPIC_CUSTOM_HEADERS (what `ccm code` sets), else ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN."""
    for line in str(environ.get("ANTHROPIC_CUSTOM_HEADERS") or "").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-ccm-key" and value.strip():
            return b"x-ccm-key", value.strip()
    return b"x-api-key", environ.get("ANTHROPIC_API_KEY") or environ.get("ANTHROPIC_AUTH_TOKEN") or ""


def _ask(base: str, session: str, environ: Any) -> tuple[dict[str, Any] | None, str]:
    """The router's answer about `session`, or (None, why not) in the line's words."""
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        return None, f"unsupported router URL {base}"
    path = (parts.path.rstrip("/") + "/ccm/sessions/" + quote(session, safe="")).encode()
    header, key = router_key(environ)
    head = b"GET " + path + b" HTTP/1.1\r\nHost: " + parts.netloc.encode() + b"\r\nConnection: close\r\n"
    if key and key.isprintable():
        head += header + b": " + key.encode() + b"\r\n"
    try:
        status, body = _get_http(parts.hostname, parts.port or 80, head + b"\r\n")
    except OSError:
        return None, f"no router at {_host(base)}"
    if status == 401:
        return None, "the router refused the key"
    if status == 404:
        return None, f"not a ccm router at {_host(base)}"
    if status != 200:
        return None, f"router answered {status}"
    try:
        answer = json.loads(body)
    except ValueError:
        return None, "unexpected answer from the router"
    return (answer, "") if isinstance(answer, dict) else (None, "unexpected answer from the router")


def _get_http(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange on a plain socket (urllib's import alone costs ~40 ms: this line must cost less than
    50 ms in all). The router answers with Content-Length and closes (`Connection: close`)."""
    deadline = time.monotonic() + TIMEOUT
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = bytearray()
        while len(received) < MAX_STDIN:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            head_end = received.find(b"\r\n\r\n")
            if head_end >= 0:
                length = _content_length(bytes(received[:head_end]))
                if length is not None and len(received) >= head_end + 4 + length:
                    break
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError("not HTTP")
    return int(status_line[1]), body


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8", "replace")) if raw.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _option(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str:
    """A value fit for the line: a string, its control characters dropped, not too long."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value if c.isprintable())[:80]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(n)


def _usd(amount: float) -> str:
    return f"${amount:.4f}" if amount < 1 else f"${amount:.2f}"


def _host(base: str) -> str:
    return urlsplit(base).netloc or base


def _join(*parts: str | None) -> str:
    return " · ".join(p for p in parts if p)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
