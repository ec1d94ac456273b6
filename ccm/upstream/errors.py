"""Upstream failures, classified in one place, and the boundary where they become the provider's.

    transport_error(provider, exc)               an httpx/OS failure of the connection → `UpstreamError`
    upstream_error(provider, status, body, hdrs) an upstream's error answer (Anthropic, OpenAI, Gemini shapes)
    classified(provider, status, message)        a failure the upstream reported with this status (an answer, an
                                                 error event in a stream, a 200 holding an error): reason and type
    timed_out(provider, message)                 no answer (or no reader) in time: 504 `timeout_error`
    protocol_error(provider, message)            an answer ccm cannot read as its wire format: 502, `protocol`
    truncated_error(provider, detail)            an answer that ended before its protocol's end: 502, `truncated`
    Redactor                                      every secret a runtime knows (provider keys and credential headers,
                                                  ccm's inbound keys), cut out of any text
    located(exc, provider, redactor)              THE boundary: whatever an attempt raised, as that provider's
                                                  `UpstreamError` with its message redacted
    with_quirk_hint(error, model, quirks)         a 4xx a known quirk fixes (QUIRK_FIXES), with the quirk to declare

The boundary is crossed once per attempt and once per relayed stream (`ccm.core.dispatch`, `ccm.core.relay`), like
httpx's `map_httpcore_exceptions`: code below it raises transport exceptions or an `UpstreamError` that may not
know its provider; nothing above it sees either. An upstream that echoes the request's headers in its error message
(several do, on a 400) can therefore never hand a key back to the client or write it to the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import httpx
import orjson

from ccm.errors import UpstreamError, config_error

REDACTED = "[redacted]"
# Shorter strings are not treated as secrets: redacting "a" or "123" would mangle every message.
MIN_SECRET_LENGTH = 8


class Redactor:
    """Removes known secret strings from text. Built once per runtime; `redact` costs one `in` test per secret on the
    (rare) error path, nothing on the hot path."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str]) -> None:
        # longest first, so a key that contains another key is removed whole
        unique = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        self._secrets = tuple(sorted(unique, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def located(exc: BaseException, provider: str, redactor: Redactor) -> UpstreamError:
    """`exc`, raised by an attempt on `provider` or by its relayed stream, as the `UpstreamError` the client and the
    log see: the provider named, the message redacted."""
    error = exc if isinstance(exc, UpstreamError) else transport_error(provider, exc)
    message = redactor.redact(error.message)
    if error.provider == provider and message == error.message:
        return error
    return error.located(provider, message)


# Upstream refusals that a quirk ccm knows fixes (`quirks NAME` on the model): a fragment of the upstream's message,
# and the quirk. DeepSeek's thinking mode wants its reasoning back on every assistant message of a tool-calling turn.
QUIRK_FIXES: tuple[tuple[str, str], ...] = (
    ("Missing `reasoning_content` field", "replay_reasoning"),
)


def with_quirk_hint(error: UpstreamError, model: str, quirks: Iterable[str]) -> UpstreamError:
    """A 4xx that a quirk the model does not declare would have avoided, with the line to add as a hint (which the
    client shows and the attempt's log line carries); any other error as it was."""
    if error.reason != "4xx":
        return error
    for fragment, quirk in QUIRK_FIXES:
        if fragment in error.message and quirk not in quirks:
            hint = f"{error.message} (ccm hint: add `quirks {quirk}` to model `{model}` in the route file)"
            return error.located(error.provider, hint)
    return error


def transport_error(provider: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, httpx.LocalProtocolError):  # ccm's own request is malformed: a header value from the file
        return config_error(provider, f"provider {provider!r}: {exc}")
    where = f"{f' {provider!r}' if provider else ''} ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
        return UpstreamError(502, f"could not connect to upstream{where}", reason="connect", provider=provider)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return timed_out(provider, f"upstream timed out{where}")
    return UpstreamError(502, f"upstream connection failed{where}", reason="connect", provider=provider)


def upstream_error(provider: str, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """An upstream's error answer (Anthropic, OpenAI or Gemini shape) as the Anthropic error the client gets."""
    message = _error_message(body) or f"upstream returned HTTP {status}"
    return classified(provider, status, message, _retry_after(headers))


def classified(provider: str, status: int, message: str, retry_after: str | None = None,
               error_type: str | None = None) -> UpstreamError:
    """A failure `provider` reported with `status`, as the client and the retry policies see it: 429 rate limited,
    503 and 529 overloaded (529 to the client, what Claude Code backs off on), 504 timed out, another 5xx a 500
    `api_error`, anything else a 4xx with its own status. `error_type` keeps the upstream's own word for a 4xx."""
    if status == 429:
        return UpstreamError(429, message, "429", provider, "rate_limit_error", retry_after)
    if status in (503, 529):
        return UpstreamError(529, message, "529" if status == 529 else "5xx", provider, "overloaded_error", retry_after)
    if status == 504:
        return timed_out(provider, message)
    if status >= 500:
        return UpstreamError(500, message, "5xx", provider, error_type or "api_error")
    return UpstreamError(status, message, "4xx", provider, error_type)


def timed_out(provider: str, message: str) -> UpstreamError:
    """No answer within a timeout (the upstream's first byte, its next chunk, a total), or a client that took no
    data: 504 `timeout_error`, reason `timeout`."""
    return UpstreamError(504, message, "timeout", provider, "timeout_error")


def protocol_error(provider: str, message: str) -> UpstreamError:
    """An upstream answer ccm cannot read as its wire format: 502 `api_error`, reason `protocol`."""
    return UpstreamError(502, message, reason="protocol", provider=provider, error_type="api_error")


def truncated_error(provider: str, detail: str) -> UpstreamError:
    """An upstream answer that ended before its protocol's end: 502 `api_error`, reason `truncated` (retried like a
    5xx before the reply starts; an `event: error` after). Never relayed as a finished answer."""
    message = f"the answer from upstream {provider!r} ended early: {detail}"
    return UpstreamError(502, message, reason="truncated", provider=provider, error_type="api_error")


def _retry_after(headers: Mapping[str, str]) -> str | None:
    """The upstream's wait hint in seconds: `retry-after-ms` (OpenAI, Anthropic) is the more precise when sent."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return f"{max(float(millis), 0.0) / 1000:g}"
        except ValueError:
            pass
    return headers.get("retry-after")


def _error_message(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str):
            return message
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return None
