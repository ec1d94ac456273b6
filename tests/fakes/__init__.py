"""Strict fake upstreams on loopback and the `ccm run` harness, for the end-to-end and resilience tests.

    FakeOpenAI, FakeAnthropic   ASGI apps that validate like the real APIs and answer scripted behaviours
    serve(app)                  runs one on 127.0.0.1 (free port, background thread): yields (base URL, app)
    CcmServer                   runs `ccm run FILE --port P` as a subprocess and waits for /health
    Reply, ToolCall, Status, Hang, Raw, StreamFault, …   the behaviours (see `script`)
"""

from .anthropic import FakeAnthropic
from .ccm_server import CcmServer, free_port
from .loopback import serve
from .openai import FakeOpenAI
from .script import (
    Behaviour,
    Exchange,
    Hang,
    Raw,
    Reply,
    Status,
    StreamFault,
    ToolCall,
    malformed_json,
    malformed_sse,
    retry_later,
    truncated_json,
    wrong_content_type,
)

__all__ = [
    "Behaviour",
    "CcmServer",
    "Exchange",
    "FakeAnthropic",
    "FakeOpenAI",
    "Hang",
    "Raw",
    "Reply",
    "Status",
    "StreamFault",
    "ToolCall",
    "free_port",
    "malformed_json",
    "malformed_sse",
    "retry_later",
    "serve",
    "truncated_json",
    "wrong_content_type",
]
