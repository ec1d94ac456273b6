"""Tool results without a native upstream form mean the same on every translating adapter (issue 13, item 6):
Claude Code's ToolSearch answers with `tool_reference` blocks only (the upstream must learn which tools became
available, not get an empty output), and `search_result` blocks keep their title and source, inside a tool result
or in the user's own turn."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ccm.providers.gemini.request import translate_request as gemini_request
from ccm.providers.openai.request import translate_request as chat_request
from ccm.providers.responses.request import translate_request as responses_request
from ccm.table import Model
from tests.conftest import load_fixture
from tests.fakes.fake_gemini import check_gemini_request
from tests.fakes.fake_responses import check_responses_request
from tests.fakes.openai_rules import Limits, check_chat_request

SEARCH = {"type": "search_result", "title": "Lark docs", "source": "https://lark-parser.readthedocs.io",
          "content": [{"type": "text", "text": "Lark is a parsing toolkit."}]}


def toolsearch_second_turn() -> dict[str, Any]:
    """The captured ToolSearch turn, answered the way Claude Code answers it: only tool_reference blocks."""
    body = load_fixture("toolsearch-turn1.json")["body"]
    call = {"type": "tool_use", "id": "toolu_search1", "name": "ToolSearch",
            "input": {"query": "select:WebFetch,Monitor"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_search1",
              "content": [{"type": "tool_reference", "tool_name": "WebFetch"},
                          {"type": "tool_reference", "tool_name": "Monitor"}]}
    lookup = {"type": "tool_use", "id": "toolu_look1", "name": "Bash", "input": {"command": "search lark"}}
    looked = {"type": "tool_result", "tool_use_id": "toolu_look1", "content": [SEARCH]}
    return dict(body, messages=[
        *body["messages"],
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [result]},
        {"role": "assistant", "content": [lookup]},
        {"role": "user", "content": [looked, SEARCH, {"type": "text", "text": "Use what you found."}]},
    ])


def translations() -> dict[str, str]:
    body = toolsearch_second_turn()
    chat, _ = chat_request(body, Model(name="c", provider="p", model="gpt-test", max_output=8192))
    check_chat_request(chat, Limits())
    responses = responses_request(body, Model(name="r", provider="p", model="gpt-5.5", max_output=8192))
    check_responses_request(responses)
    gemini = gemini_request(body, Model(name="g", provider="p", model="gemini-2.5-flash", max_output=8192))
    check_gemini_request("gemini-2.5-flash", gemini)
    return {"openai": orjson.dumps(chat["messages"][-5:]).decode(),
            "openai-responses": orjson.dumps(responses["input"][-6:]).decode(),
            "gemini": orjson.dumps(gemini["contents"][-4:]).decode()}


@pytest.mark.parametrize("kind", ["openai", "openai-responses", "gemini"])
def test_a_toolsearch_result_says_which_tools_became_available(kind: str) -> None:
    sent = translations()[kind]
    assert "[tool WebFetch is now available]" in sent and "[tool Monitor is now available]" in sent


@pytest.mark.parametrize("kind", ["openai", "openai-responses", "gemini"])
def test_search_results_keep_their_title_and_source(kind: str) -> None:
    sent = translations()[kind]
    head = "Lark docs https://lark-parser.readthedocs.io"
    assert sent.count(head) == 2, sent  # in the tool result and in the user's own turn
    assert sent.count("Lark is a parsing toolkit.") == 2
