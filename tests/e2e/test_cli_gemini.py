"""The real Claude Code CLI → `ccm run examples/gemini.ccm` → the strict fake Gemini (tests/fakes/fake_gemini.py).

The fake validates every request like Gemini does (unknown fields, schema rules, function-call turn rules) and, as
a Gemini 3 model, signs the first call of each turn and rejects a later turn whose call lost its signature. So the
Bash round trip passing proves, with the real client, that Claude Code keeps the signature ccm hands it and that ccm
puts it back on the right call.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import CcmServer, serve
from tests.fakes.fake_gemini import FakeGemini, call_chunk, text_chunk

from .test_e2e_claude_cli import EXAMPLES, run_claude, workdir  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.slow  # the real Claude Code CLI or real `ccm run`s: seconds each

GEMINI_KEY = "gemini-e2e-key"
USAGE = {"promptTokenCount": 12000, "candidatesTokenCount": 20, "totalTokenCount": 12020}


class GeminiStack:
    def __init__(self, ccm: CcmServer, fake: FakeGemini) -> None:
        self.ccm, self.fake = ccm, fake


@pytest.fixture
def gemini(tmp_path: Path) -> Iterator[GeminiStack]:
    fake = FakeGemini(key=GEMINI_KEY)
    with serve(fake) as (url, _):
        env = {"GEMINI_BASE_URL": url, "GEMINI_API_KEY": GEMINI_KEY}
        with CcmServer.from_text(tmp_path, (EXAMPLES / "gemini.ccm").read_text(), env) as ccm:
            yield GeminiStack(ccm, fake)
            assert "Traceback" not in ccm.logs(), ccm.logs()


def tool_outputs(body: dict[str, Any]) -> list[str]:
    return [str(p["functionResponse"]["response"].get("result", "")) for c in body["contents"] for p in c["parts"]
            if "functionResponse" in p]


def test_bash_round_trip_keeps_the_thought_signature(claude_bin: Path, gemini: GeminiStack, workdir: Path) -> None:  # noqa: F811
    marker = f"ccm-e2e-{random.randrange(32768)}"

    def scenario(body: dict[str, Any]) -> list[dict[str, Any]]:
        outputs = tool_outputs(body)
        if outputs:
            return [text_chunk(f"The tool said: {outputs[-1].strip()}", finish="STOP", usage=USAGE)]
        if any(d["name"] == "Bash" for t in body.get("tools", ()) for d in t.get("functionDeclarations", ())):
            return [text_chunk("Running it.", usage=USAGE),
                    call_chunk("Bash", {"command": f"echo {marker}", "description": "Print the marker"}, finish="STOP",
                               usage=USAGE)]
        return [text_chunk("A side answer.", finish="STOP", usage=USAGE)]

    gemini.fake.default = scenario
    result = run_claude(claude_bin, gemini.ccm, workdir, f"Run echo {marker}", "--allowedTools", "Bash")
    assert marker in result["result"]
    assert [e.rejected for e in gemini.fake.exchanges if e.rejected] == []
    final = gemini.fake.exchanges[-1]
    assert final.model == "gemini-3-pro" and final.stream
    model_turn = final.body["contents"][-2]
    call = next(p for p in model_turn["parts"] if "functionCall" in p)
    assert call["thoughtSignature"] in gemini.fake.issued
    assert marker in tool_outputs(final.body)[-1]
