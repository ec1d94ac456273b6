"""pytest fixtures for the fakes, imported by the conftest of each suite that uses them.

Each yields `(base_url, fake)` with the fake served on 127.0.0.1, and fails the test if the fake itself crashed
(a bug in the fake must never pass for a bug in ccm).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .anthropic import FakeAnthropic
from .loopback import serve
from .openai import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, FakeOpenAI]]:
    with serve(FakeOpenAI()) as (url, fake):
        yield url, fake
    assert not fake.crashes, "\n".join(fake.crashes)


@pytest.fixture
def fake_anthropic() -> Iterator[tuple[str, FakeAnthropic]]:
    with serve(FakeAnthropic()) as (url, fake):
        yield url, fake
    assert not fake.crashes, "\n".join(fake.crashes)
