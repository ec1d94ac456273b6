"""Tool-call ids across wire formats, both directions.

Anthropic accepts `tool_use.id` only when it matches `^[a-zA-Z0-9_-]+$` (PROTOCOL §8 pitfall 2). An upstream id that
does is kept; one that does not (kimi's `functions.Bash:0`) reaches the client as `toolu_ccm_<hex of the original>`
(`client_tool_id`) and is decoded back on the way up (`upstream_tool_id`), so both sides see ids they accept.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any


def client_tool_id(upstream_id: str) -> str:
    """The id the client sees for a non-empty upstream tool-call id: valid ids unchanged, others encoded."""
    if TOOL_ID.match(upstream_id):
        return upstream_id
    raw = upstream_id.encode()
    if len(raw) <= 64:
        return ENCODED_ID_PREFIX + raw.hex()
    return "toolu_" + hashlib.sha256(raw).hexdigest()[:24]


def upstream_tool_id(client_id: Any) -> Any:
    """The id to send upstream for an id from the client's history; the inverse of `client_tool_id`. Anything but
    a string (a missing id) is returned as it is."""
    if not isinstance(client_id, str):
        return client_id
    if client_id.startswith(ENCODED_ID_PREFIX):
        try:
            original = bytes.fromhex(client_id[len(ENCODED_ID_PREFIX) :]).decode()
        except ValueError:
            return client_id
        return client_id if TOOL_ID.match(original) else original
    return client_id if TOOL_ID.match(client_id) else client_tool_id(client_id)


TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+\Z")  # \Z: `$` would also match before a trailing newline


ENCODED_ID_PREFIX = "toolu_ccm_"
