"""The real Claude Code CLI → `ccm run examples/responses.ccm` → the strict fake Responses API
(tests/fakes/fake_responses.py), which rejects unanswered calls, orphan outputs, strict-incompatible tools and
`reasoning` on non-reasoning models. The fake sends call arguments only in `.done` events, as some backends do."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import CcmServer, serve
from tests.fakes.fake_responses import FakeResponses, call_item, message_item

from .test_e2e_claude_cli import EXAMPLES, run_claude, workdir  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.slow  # the real Claude Code CLI or real `ccm run`s: seconds each

OPENAI_KEY = "sk-e2e-responses"


class ResponsesStack:
    def __init__(self, ccm: CcmServer, fake: FakeResponses) -> None:
        self.ccm, self.fake = ccm, fake


@pytest.fixture
def responses(tmp_path: Path) -> Iterator[ResponsesStack]:
    fake = FakeResponses(key=OPENAI_KEY, args_only_in_done=True)
    with serve(fake) as (url, _):
        env = {"OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": OPENAI_KEY}
        with CcmServer.from_text(tmp_path, (EXAMPLES / "responses.ccm").read_text(), env) as ccm:
            yield ResponsesStack(ccm, fake)
            assert "Traceback" not in ccm.logs(), ccm.logs()


def tool_outputs(body: dict[str, Any]) -> list[str]:
    return [i["output"] for i in body["input"] if i.get("type") == "function_call_output"
            and isinstance(i["output"], str)]


def test_bash_round_trip(claude_bin: Path, responses: ResponsesStack, workdir: Path) -> None:  # noqa: F811
    marker = f"ccm-e2e-{random.randrange(32768)}"

    def scenario(body: dict[str, Any]) -> list[dict[str, Any]]:
        outputs = tool_outputs(body)
        if outputs:
            return [message_item(f"The tool said: {outputs[-1].strip()}")]
        if any(t.get("name") == "Bash" for t in body.get("tools", ())):
            return [call_item("Bash", {"command": f"echo {marker}", "description": "Print the marker"}, "call_e2e")]
        return [message_item("A side answer.")]

    responses.fake.default = scenario
    result = run_claude(claude_bin, responses.ccm, workdir, f"Run echo {marker}", "--allowedTools", "Bash")
    assert marker in result["result"]
    assert [e.rejected for e in responses.fake.exchanges if e.rejected] == []
    final = responses.fake.exchanges[-1].body
    assert final["model"] == "gpt-5-codex" and final["reasoning"] == {"effort": "medium"}
    kinds = [i.get("type") for i in final["input"]]
    assert kinds[kinds.index("function_call") + 1] == "function_call_output"
    assert marker in tool_outputs(final)[-1]
