"""One `ccm run` with the default rig serves every fault test that leaves its breakers closed; a test that needs
another route file, or opens a breaker, starts its own `Rig`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.resilience.rig import Rig


@pytest.fixture(scope="module")
def shared_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with Rig.start(tmp_path_factory.mktemp("rig")) as rig:
        yield rig


@pytest.fixture
def rig(shared_rig: Rig) -> Iterator[Rig]:
    shared_rig.begin()
    yield shared_rig
    shared_rig.end()
