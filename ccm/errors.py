"""Client-facing errors, always in Anthropic's shape.

    ApiError            an error ccm answers with: status, Anthropic `error.type`, message, extra headers
    └── UpstreamError   a failed upstream attempt, classified once (`reason`) so retry policies can read it

Both are immutable: what an error says is fixed where it is made. An `UpstreamError` raised below the upstream
boundary may not know whose it is yet (`provider == ""`); the boundary (`ccm.upstream.errors.located`) replaces it
with a copy that names the provider and has every secret redacted, once.

Every error a client sees passes through `error_body` (JSON responses) or `error_event` (after a stream started).
Messages are built from names (providers, variables), never from values; what an upstream wrote in its own error
message is redacted at the boundary before it can reach a client or a log.
"""

from __future__ import annotations

from typing import Literal

import orjson

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

Headers = tuple[tuple[str, str], ...]


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_type: str | None = None, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for(status)
        self.headers = headers

    def body(self) -> bytes:
        return error_body(self.error_type, self.message)

    def event(self) -> bytes:
        return error_event(self.error_type, self.message)


# Why an upstream attempt failed, in the vocabulary of retry policies (`retry ... on 429 5xx 529 timeout connect`),
# plus the failures no policy word names: another 4xx, an answer ccm cannot read (`protocol`), an answer that ended
# before its protocol's end (`truncated`: a stream without its last event, JSON cut off; 502 `api_error`, retried
# like a 5xx), a missing key.
FailureReason = Literal["429", "5xx", "529", "timeout", "connect", "4xx", "protocol", "truncated", "config"]


class UpstreamError(ApiError):
    """A failed upstream attempt. `reason` classifies it for retry and fallback decisions; `provider` names who
    failed. `retry_after` is the upstream's own header value, forwarded to the client on a final 429/529."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: FailureReason,
        provider: str = "",
        error_type: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        headers: Headers = (("retry-after", retry_after),) if retry_after else ()
        if reason == "config":
            # A missing key will not appear by retrying: tell the Anthropic SDK (Claude Code) not to retry.
            headers += (("x-should-retry", "false"),)
        super().__init__(status, message, error_type, headers)
        self.reason: FailureReason = reason
        self.provider = provider
        self.retry_after = retry_after

    def located(self, provider: str, message: str) -> UpstreamError:
        """This failure, as `provider`'s, saying `message` (the boundary's redacted text)."""
        return UpstreamError(self.status, message, self.reason, provider, self.error_type, self.retry_after)


# A configuration problem (a provider's key unset, a header the file spells wrong) is answered 424: Claude Code
# 2.1.328 shows "API Error: 424 <message>" and asks once. A 5xx adds "This is a server-side issue, usually
# temporary — try again in a moment"; 400 and 422 are asked again up to six times; 401 and 403 say "Failed to
# authenticate" (tests/e2e/test_cli_code.py shows what it prints).
CONFIG_STATUS = 424


def config_error(provider: str, message: str) -> UpstreamError:
    """A provider that cannot be called as configured: not retried, not the breaker's, shown as a setup problem."""
    return UpstreamError(CONFIG_STATUS, message, reason="config", provider=provider, error_type="api_error")


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def error_event(error_type: str, message: str) -> bytes:
    """An SSE `error` frame: what a client gets when a failure happens after the stream's 200 was sent."""
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"
