"""How ccm's processes log: one format, set up once per process (`ccm run`, each of its workers).

    configure_logging(level, fmt)   `text` (the default: `time LEVEL logger: message`, control characters in the
                                    message escaped) or `json`: one JSON object per line, `{"time", "level",
                                    "logger", "message"}`, for log shippers
    request_logger(fmt)             the record subscriber that writes the request line in that format
    log_request_json(record)        the request line as JSON: the text line's facts as keys (`request_fields`)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson

from ccm.core.record import RequestRecord, Subscriber, log_request

LEVEL_VARIABLE = "CCM_LOG_LEVEL"  # how `ccm run --workers N` hands its level to the workers
FORMAT_VARIABLE = "CCM_LOG_FORMAT"  # ... and its format
FORMATS = ("text", "json")

_request_log = logging.getLogger("ccm.request")


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A record carrying `fields` (the request line) has them as keys of its own."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


# Control characters as their escapes: a message that quotes an upstream's error text or a model's tool name cannot
# start a line of its own (a forged log line) or move a terminal's cursor.
_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(32), 0x7F, 0x85, 0x2028, 0x2029)}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, one line per message (a traceback still follows on lines of its own)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not record.message.isprintable():
            record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    os.environ[LEVEL_VARIABLE] = level
    os.environ[FORMAT_VARIABLE] = fmt
    # httpx logs every upstream request at INFO: a second line per request (ccm.attempt already names it) and
    # formatting work on the hot path. Its warnings still show; --log-level debug shows everything.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    # What the lines do not show, not gathered for every record (the logging HOWTO's "Optimization"): the caller's
    # file and line (a frame walk per record), the thread, the process and its name.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def request_logger(fmt: str) -> Subscriber:
    return log_request_json if fmt == "json" else log_request


def request_fields(record: RequestRecord) -> dict[str, Any]:
    """The request line's facts, as the JSON line's keys (None-valued ones left out)."""
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "latency_ms": round(record.latency_ms, 2),
        "outcome": record.outcome,
        "caller": record.caller.kind,
        "table_version": record.table_version,
    }
    optional = {
        "session_id": record.session_id,
        "requested_model": record.requested_model,
        "rule": record.rule,
        "rule_index": record.rule_index,
        "model": record.model,
        "target": record.target,
        "ttfb_ms": round(record.ttfb_ms, 2) if record.ttfb_ms is not None else None,
        "error": record.error,
    }
    fields.update({name: value for name, value in optional.items() if value is not None})
    if record.attempts:
        fields["attempts"] = len(record.attempts)
    if record.usage is not None:
        fields["input_tokens"] = record.usage.input
        fields["output_tokens"] = record.usage.output
        fields["cache_read_input_tokens"] = record.usage.cache_read
        fields["cache_write_5m_input_tokens"] = record.usage.cache_write_5m
        fields["cache_write_1h_input_tokens"] = record.usage.cache_write_1h
        if record.usage_estimated:
            fields["usage_estimated"] = True
    for flag in ("stream", "truncated", "client_disconnected"):
        if getattr(record, flag):
            fields[flag] = True
    return fields


def log_request_json(record: RequestRecord) -> None:
    """The request line for `--log-format json`: the message is short, the facts are keys."""
    if not _request_log.isEnabledFor(logging.INFO):
        return
    message = f"{record.method} {record.path} {record.status}"
    _request_log.info(message, extra={"fields": request_fields(record)})
