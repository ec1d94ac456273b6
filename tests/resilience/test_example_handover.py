"""The shipped example hands a hung primary over in seconds: examples/fallback.ccm as it is, through a real
`ccm run`, with a primary that hangs before its headers; `spare` answers after one `first_byte` (20 s), not after
four tries of a minute each (the example before issue 14: about four minutes, past a 120 s client's patience)."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
import pytest

from tests.fakes import CcmServer, FakeOpenAI, Hang, Reply, serve

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fallback.ccm"


@pytest.mark.slow
def test_a_hung_primary_hands_over_to_spare_within_its_first_byte(tmp_path: Path) -> None:
    primary, backup = FakeOpenAI("sk-primary"), FakeOpenAI("sk-backup", default=Reply(text="spare"))
    primary.script(Hang(120))
    with serve(primary) as (primary_url, _), serve(backup) as (backup_url, _):
        env = {"PRIMARY_BASE_URL": f"{primary_url}/v1", "PRIMARY_API_KEY": "sk-primary",
               "FALLBACK_BASE_URL": f"{backup_url}/v1", "FALLBACK_API_KEY": "sk-backup"}
        with CcmServer.from_text(tmp_path, EXAMPLE.read_text(), env) as ccm:
            client = anthropic.Anthropic(base_url=ccm.url, api_key="ccm-local", max_retries=0, timeout=120)
            started = time.monotonic()
            raw = client.messages.with_raw_response.create(
                model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
            elapsed = time.monotonic() - started
            logs = ccm.logs()
    message = raw.parse()
    assert message.content[0].text == "spare"  # type: ignore[union-attr]
    assert raw.headers["x-ccm-model"] == "spare" and raw.headers["x-ccm-attempts"] == "2", logs
    assert 19.5 <= elapsed < 30, elapsed
