"""End-to-end stacks: a real `ccm run` subprocess in front of a strict fake upstream, both on 127.0.0.1.

One stack per test module (starting `ccm run` costs about a second); each test gets it with the fake reset, and
after each test the stack is checked: the fake did not crash, no request is left in flight, ccm is still running
and its log holds no traceback (ccm must never crash on a request, whatever the upstream does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import pytest

from tests.fakes import CcmServer, FakeAnthropic, FakeOpenAI, serve
from tests.fakes.upstream import FakeUpstream

ROUTES = Path(__file__).parent / "routes"
CLIENT_KEY = "ccm-local"  # what a client sends to a ccm without inbound auth; never forwarded upstream
OPENAI_KEY = "sk-e2e-openai"
ANTHROPIC_KEY = "sk-ant-e2e-upstream"
OUTPUT_CAP = 8192  # the fake OpenAI model's max output; routes/openai.ccm declares `max_output 8k`


@dataclass
class Stack:
    ccm: CcmServer
    fake: FakeUpstream

    @property
    def url(self) -> str:
        return self.ccm.url

    def client(self, **options: object) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=CLIENT_KEY, max_retries=0, timeout=30.0, **options)  # type: ignore[arg-type]

    def stream_hi(self, model: str) -> anthropic.types.Message:
        """A short streamed request read to its final message: an upstream failure surfaces as the SDK raises it."""
        with self.client().messages.stream(model=model, max_tokens=64,
                                           messages=[{"role": "user", "content": "hi"}]) as stream:
            return stream.get_final_message()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the fake has finished answering (ccm may close an upstream stream just after the client)."""
        deadline = time.monotonic() + timeout
        while self.fake.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)

    def check_healthy(self) -> None:
        self.settle()
        assert not self.fake.crashes, "\n".join(self.fake.crashes)
        assert self.fake.in_flight == 0, "an upstream request is still open after the test"
        assert self.ccm.running, f"`ccm run` died:\n{self.ccm.logs()}"
        assert "Traceback" not in self.ccm.logs(), self.ccm.logs()

    def for_one_test(self) -> Iterator[Stack]:
        """A per-test fixture's body: the module's stack with its fake reset, checked healthy after the test."""
        self.fake.reset()
        yield self
        self.check_healthy()


def start_stack(folder: Path, routes: str, fake: FakeUpstream, env_for_url: dict[str, str]) -> Iterator[Stack]:
    """Serve `fake`, then `ccm run` on the route text `routes`, with `{url}` in env values set to the fake's URL."""
    with serve(fake) as (upstream_url, _):
        env = {name: value.format(url=upstream_url) for name, value in env_for_url.items()}
        with CcmServer.from_text(folder, routes, env) as ccm:
            yield Stack(ccm, fake)


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned Claude Code CLI (`make claude-cli`); CLAUDE_CODE_VERSION, which the installer reads too, names
    another."""
    version = os.environ.get("CLAUDE_CODE_VERSION", "2.1.328")
    cache = Path(os.environ.get("CCM_CACHE") or Path.home() / ".cache" / "ccm")
    binary = cache / f"claude-code-{version}" / "bin" / "claude"
    if not binary.exists():
        pytest.fail(f"Claude Code {version} is not installed at {binary}: run `make claude-cli`")
    return binary


@pytest.fixture(scope="module")
def openai_stack_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeOpenAI(OPENAI_KEY, max_output=OUTPUT_CAP)
    env = {"OPENAI_BASE_URL": "{url}/v1", "OPENAI_API_KEY": OPENAI_KEY}
    yield from start_stack(tmp_path_factory.mktemp("ccm-openai"), (ROUTES / "openai.ccm").read_text(), fake, env)


@pytest.fixture(scope="module")
def anthropic_stack_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeAnthropic(ANTHROPIC_KEY)
    env = {"ANTHROPIC_UPSTREAM_URL": "{url}", "ANTHROPIC_UPSTREAM_KEY": ANTHROPIC_KEY}
    yield from start_stack(tmp_path_factory.mktemp("ccm-anthropic"), (ROUTES / "anthropic.ccm").read_text(), fake, env)


@pytest.fixture
def openai_stack(openai_stack_module: Stack) -> Iterator[Stack]:
    yield from openai_stack_module.for_one_test()


@pytest.fixture
def anthropic_stack(anthropic_stack_module: Stack) -> Iterator[Stack]:
    yield from anthropic_stack_module.for_one_test()
