"""The fault-injection rig: two fake upstreams on 127.0.0.1, a real `ccm run` in front of them, and the `anthropic`
SDK as the client (`max_retries=0`, so what a test sees is ccm's behaviour, not the SDK's).

    with Rig.start(tmp_path) as rig:                  # primary: FakeOpenAI; fallback: FakeOpenAI or FakeAnthropic
        rig.primary.script(Status(500))
        reply, headers, elapsed = rig.ask()
        assert headers["x-ccm-model"] == "backup"

Leaks are counted from the outside when the rig stops: every fake must have no request in flight (an attempt ccm
abandoned without closing its connection keeps the fake's handler waiting), the number of TCP connections the fakes
hold open must stay within what keep-alive explains, and the server's own log must hold no traceback and no
`internal error`. Nothing asks the server for its tasks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ccm_server import CcmServer
from tests.fakes.loopback import serve
from tests.fakes.openai import FakeOpenAI

PRIMARY_KEY = "sk-primary-fake"
FALLBACK_KEY = "sk-fallback-fake"

# Short timeouts and backoff so each fault plays out in well under a second; the policy is the file's, as a user
# would write it.
ROUTES = """
provider primary {{
  type openai
  url env("PRIMARY_BASE_URL")
  key env("PRIMARY_API_KEY")
  timeout connect 1s first_byte 600ms idle 600ms total {primary_total}
  retry {primary_retries} backoff 50ms..200ms on 429 5xx 529 timeout connect
}}

provider fallback {{
  type {fallback_type}
  url env("FALLBACK_BASE_URL")
  key env("FALLBACK_API_KEY")
  timeout connect 1s first_byte 600ms idle 600ms total 10s
  retry 1 backoff 50ms..200ms
}}

model main = primary/gpt-main{main_block}
model backup = fallback/{fallback_model}

route {{
  default -> main
}}

fallback main -> backup
"""

ATTEMPT_LINE = re.compile(
    r"attempt provider=(\S+) model=(\S+)(?: deployment=\S+)? status=(\d+) latency=(\d+)ms(?: reason=([^\s:]+))?"
)


def established(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local end is `port`: what a fake server holds open."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_for(predicate: Any, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@dataclass
class Rig:
    ccm: CcmServer
    client: anthropic.Anthropic
    primary: FakeOpenAI
    fallback: FakeOpenAI | FakeAnthropic
    primary_port: int
    fallback_port: int
    log_offset: int = 0  # where this test's part of the server log starts (a rig may serve several tests)

    @classmethod
    @contextmanager
    def start(
        cls,
        folder: Path,
        *,
        fallback: str = "openai",
        primary_retries: int = 2,
        primary_total: str = "10s",
        main_block: str = "",
        primary_url: str | None = None,
        max_connections: int = 2,
        routes: str | None = None,
    ) -> Iterator[Rig]:
        with ExitStack() as stack:
            primary_url_served, primary = stack.enter_context(serve(FakeOpenAI(PRIMARY_KEY)))
            fallback_fake: FakeOpenAI | FakeAnthropic = (
                FakeOpenAI(FALLBACK_KEY) if fallback == "openai" else FakeAnthropic(FALLBACK_KEY)
            )
            fallback_url, fallback_fake = stack.enter_context(serve(fallback_fake))
            text = routes or ROUTES.format(
                primary_total=primary_total,
                primary_retries=primary_retries,
                fallback_type=fallback,
                main_block=main_block,
                fallback_model="gpt-backup" if fallback == "openai" else "claude-backup-1",
            )
            env = {
                "PRIMARY_BASE_URL": primary_url or f"{primary_url_served}/v1",
                "PRIMARY_API_KEY": PRIMARY_KEY,
                "FALLBACK_BASE_URL": f"{fallback_url}/v1" if fallback == "openai" else fallback_url,
                "FALLBACK_API_KEY": FALLBACK_KEY,
            }
            ccm = stack.enter_context(CcmServer.from_text(folder, text, env))
            client = anthropic.Anthropic(base_url=ccm.url, api_key="ccm-test", max_retries=0, timeout=30.0)
            rig = cls(ccm, client, primary, fallback_fake, _port(primary_url_served), _port(fallback_url))
            yield rig
            client.close()
            rig.assert_no_leaks(max_connections)

    # --- asking ------------------------------------------------------------------------------------------------

    # --- sharing one server between tests --------------------------------------------------------------------

    def begin(self) -> None:
        """Start a test on a shared rig: forget earlier requests and log lines."""
        self.primary.exchanges.clear()
        self.fallback.exchanges.clear()
        self.log_offset = len(self.ccm.logs())

    def end(self, max_connections: int = 2) -> None:
        """Finish a test on a shared rig: every script consumed, nothing leaked, breakers back to a clean closed
        state (one success on each provider: `direct` routing lets a request name the fallback's alias)."""
        assert self.primary.pending == 0 and self.fallback.pending == 0, "scripted behaviours left unused"
        self.assert_no_leaks(max_connections)
        for alias in ("main", "backup"):
            _, headers, _ = self.ask(model=alias)
            assert headers["x-ccm-model"] == alias
        breakers = self.health()["breakers"]
        clean = {"state": "closed", "consecutive_failures": 0, "opened": 0, "in_flight": 0}
        deployments = [d for b in breakers.values() for d in b["models"].values()]
        assert all(d == clean | _last(d) for d in deployments), breakers

    def ask(self, text: str = "Say hello.", **extra: Any) -> tuple[anthropic.types.Message, httpx.Headers, float]:
        """A non-streaming request; returns the message, the response headers and the elapsed seconds."""
        started = time.monotonic()
        extra.setdefault("model", "claude-opus-5-5")
        raw = self.client.messages.with_raw_response.create(
            max_tokens=256, messages=[{"role": "user", "content": text}], **extra
        )
        return raw.parse(), raw.headers, time.monotonic() - started

    def fail(self, text: str = "Say hello.", **extra: Any) -> tuple[anthropic.APIStatusError, float]:
        """A request expected to fail: the SDK's error (status, Anthropic-shaped body, headers) and the elapsed time."""
        started = time.monotonic()
        try:
            self.client.messages.create(
                model="claude-opus-5-5", max_tokens=256, messages=[{"role": "user", "content": text}], **extra
            )
        except anthropic.APIStatusError as error:
            assert_anthropic_error(error)
            return error, time.monotonic() - started
        raise AssertionError("the request did not fail")

    def stream(self, text: str = "Say hello.") -> tuple[list[Any], httpx.Headers, BaseException | None, float]:
        """A streaming request: the events received, the headers, the error that ended it (if any), elapsed."""
        started = time.monotonic()
        events: list[Any] = []
        failure: BaseException | None = None
        stream = self.client.messages.create(
            model="claude-opus-5-5",
            max_tokens=256,
            messages=[{"role": "user", "content": text}],
            stream=True,
        )
        try:
            for event in stream:
                events.append(event)
        except anthropic.APIError as error:
            failure = error
        finally:
            stream.close()
        return events, stream.response.headers, failure, time.monotonic() - started

    def stream_raw(self, text: str = "Say hello.") -> tuple[int, httpx.Headers, bytes, float]:
        """A streaming request read as bytes, to check the framing itself."""
        started = time.monotonic()
        body = {"model": "claude-opus-5-5", "max_tokens": 256, "stream": True,
                "messages": [{"role": "user", "content": text}]}
        with httpx.stream("POST", f"{self.ccm.url}/v1/messages", json=body, timeout=30.0,
                          headers={"anthropic-version": "2023-06-01", "x-api-key": "ccm-test"}) as response:
            data = response.read()
        return response.status_code, response.headers, data, time.monotonic() - started

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.ccm.url}/health", timeout=5.0).json()  # type: ignore[no-any-return]

    def attempts_logged(self) -> list[tuple[str, str, int, int, str | None]]:
        """(provider, model, status, latency ms, reason) of every attempt line in the server's log so far."""
        return [
            (m[1], m[2], int(m[3]), int(m[4]), m[5]) for m in ATTEMPT_LINE.finditer(self.logs())
        ]

    def logs(self) -> str:
        """The server's log since this test began."""
        return self.ccm.logs()[self.log_offset :]

    # --- leaks -------------------------------------------------------------------------------------------------

    def assert_no_leaks(self, max_connections: int) -> None:
        for name, fake in (("primary", self.primary), ("fallback", self.fallback)):
            assert wait_for(lambda fake=fake: fake.in_flight == 0), f"{name}: {fake.in_flight} requests still in flight"
            assert not fake.crashes, "\n".join(fake.crashes)
        for name, port in (("primary", self.primary_port), ("fallback", self.fallback_port)):
            assert wait_for(lambda port=port: established(port) <= max_connections), (
                f"{name}: {established(port)} connections held open (keep-alive explains {max_connections})"
            )
        logs = self.logs()
        assert "Traceback" not in logs and "internal error" not in logs, logs


def assert_anthropic_error(error: anthropic.APIStatusError) -> None:
    body = error.body
    assert isinstance(body, dict), body
    assert body.get("type") == "error", body
    assert set(body["error"]) >= {"type", "message"}, body
    assert error.status_code != 500 or body["error"]["message"] != "internal error", body


def _last(breaker: dict[str, Any]) -> dict[str, Any]:
    return {"last_failure": breaker["last_failure"]} if "last_failure" in breaker else {}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])
