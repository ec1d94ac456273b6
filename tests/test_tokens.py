"""ccm.tokens: every part of a request is counted, images from their headers, the cache turns repeated content into
lookups and stays bounded, and importing the module stays cheap."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ccm.tokens as tokens
from ccm.media import image_size
from ccm.messages_request import parse_request
from ccm.tokens import IMAGE_TOKENS, PDF_PAGE_TOKENS, TokenCounter, count_request_tokens, image_tokens
from tests.conftest import REPO, fixture_names, load_fixture


def cl100k(text: str) -> int:
    return len(tokens.load_encoding().encode_ordinary(text))


def request(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **fields}


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width: int, height: int) -> str:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b64(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + ihdr + b"\x00" * 40)


def jpeg(width: int, height: int, exif_bytes: int = 0) -> str:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b"\xff\xe1" + (exif_bytes + 2).to_bytes(2, "big") + b"E" * exif_bytes if exif_bytes else b""
    sof = b"\xff\xc2\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + b"\x00" * 9
    return b64(b"\xff\xd8" + app0 + app1 + b"\xff\xff" + sof + b"\xff\xda" + b"\x00" * 30)


def gif(width: int, height: int) -> str:
    return b64(b"GIF89a" + width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\x00" * 30)


def webp(chunk: bytes, payload: bytes) -> str:
    return b64(b"RIFF\x00\x00\x00\x00WEBP" + chunk + b"\x00\x00\x00\x00" + payload + b"\x00" * 30)


def webp_vp8x(width: int, height: int) -> str:
    return webp(b"VP8X", b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little"))


def webp_vp8l(width: int, height: int) -> str:
    return webp(b"VP8L", b"\x2f" + ((width - 1) | (height - 1) << 14).to_bytes(4, "little"))


def webp_vp8(width: int, height: int) -> str:
    return webp(b"VP8 ", b"\x00\x00\x00\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little"))


def test_the_loaded_encoding_drops_its_python_rank_table_and_counts_as_a_pristine_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tiktoken
    from tiktoken.registry import ENCODING_CONSTRUCTORS

    trimmed = tokens.load_encoding()
    assert not trimmed._mergeable_ranks  # the ~15 MB copy load_encoding frees
    pristine = tiktoken.Encoding(**ENCODING_CONSTRUCTORS[tokens.ENCODING_NAME]())
    assert pristine._mergeable_ranks
    bodies = [load_fixture(name)["body"] for name in fixture_names()]
    trimmed_counts = [TokenCounter().count(body) for body in bodies]
    monkeypatch.setattr(tokens, "load_encoding", lambda: pristine)
    assert [TokenCounter().count(body) for body in bodies] == trimmed_counts
    for body in bodies:
        text = orjson.dumps(body).decode()
        assert trimmed.encode_ordinary(text) == pristine.encode_ordinary(text)


@pytest.mark.parametrize("name", fixture_names())
def test_the_size_ceiling_bounds_the_count_of_every_captured_request(name: str) -> None:
    raw = orjson.dumps(load_fixture(name)["body"])
    ceiling = tokens.token_ceiling(raw)
    if ceiling is None:
        assert b'"image"' in raw or b'"document"' in raw
        return
    assert TokenCounter().count(parse_request(raw, count_only=True)) <= ceiling


def test_the_size_ceiling_holds_where_orjson_writes_a_value_longer_than_the_body() -> None:
    inputs = ",".join([f'{{"type":"tool_use","id":"t{i}","name":"n","input":{{"v":[1e15,2e15,3e15,1e9]}}}}'
                       for i in range(50)])
    raw = f'{{"model":"m","max_tokens":5,"messages":[{{"role":"assistant","content":[{inputs}]}}]}}'.encode()
    ceiling = tokens.token_ceiling(raw)
    assert ceiling is not None and TokenCounter().count(parse_request(raw)) <= ceiling


@pytest.mark.parametrize("raw", [
    b'{"content":[{"type":"image","source":{}}]}',
    b'{"content":[{"type": "document"}]}',
    b'{"content":[{"type":"\\u0069mage"}]}',  # a block type spelled with escapes is not missed
])
def test_no_size_ceiling_when_the_body_may_hold_images_or_documents(raw: bytes) -> None:
    assert tokens.token_ceiling(raw) is None


# --- what is counted ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_names())
def test_captured_requests_count_everything_the_model_reads(name: str) -> None:
    body = load_fixture(name)["body"]
    count = TokenCounter().count(body)
    # Every text the model reads, tokenized on its own, is a floor: a count below it left something out.
    texts: list[str] = []
    system = body.get("system", [])
    texts += [system] if isinstance(system, str) else [block["text"] for block in system]
    for message in body["messages"]:
        content = message["content"]
        texts += [content] if isinstance(content, str) else [json.dumps(block) for block in content]
    for tool in body.get("tools", []):
        texts += [tool.get("description", ""), json.dumps(tool.get("input_schema", tool))]
    floor = sum(cl100k(text) for text in texts) * 0.8  # JSON framing of blocks adds tokens the counter skips
    assert count >= floor
    # ...and it does not wildly overcount either: the whole request JSON, tokenized, is a generous ceiling.
    assert count <= cl100k(json.dumps(body)) * 1.2 + tokens.TOOL_USE_SYSTEM_PROMPT


def test_system_string_blocks_and_system_role_messages_all_count() -> None:
    counter = TokenCounter()
    bare = counter.count(request({"role": "user", "content": "hi"}))
    prompt = "You are a careful engineer who reads the whole file first."
    for body in (
        request({"role": "user", "content": "hi"}, system=prompt),
        request({"role": "user", "content": "hi"}, system=[{"type": "text", "text": prompt}]),
        request({"role": "system", "content": prompt}, {"role": "user", "content": "hi"}),
    ):
        assert counter.count(body) >= bare + cl100k(prompt)


@pytest.mark.parametrize(
    ("block", "expected_at_least"),
    [
        ({"type": "text", "text": "the quick brown fox " * 50}, cl100k("the quick brown fox " * 50)),
        ({"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la " * 40}},
         cl100k(json.dumps({"command": "ls -la " * 40}))),
        ({"type": "tool_result", "tool_use_id": "toolu_1", "content": "line of output\n" * 60},
         cl100k("line of output\n" * 60)),
        ({"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "see"}, {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
         IMAGE_TOKENS),
        ({"type": "thinking", "thinking": "let me think step by step " * 40, "signature": "sig"},
         cl100k("let me think step by step " * 40)),
        ({"type": "redacted_thinking", "data": "QUJD" * 500}, 400),
        ({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "lark parser " * 20}},
         cl100k(json.dumps({"query": "lark parser " * 20}))),
        ({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
            {"type": "web_search_result", "url": "https://lark-parser.readthedocs.io", "title": "Lark " * 30,
             "encrypted_content": "EqQBCkYIBxgCKkA" * 40}]}, 300),
        ({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a plain document " * 50}},
         cl100k("a plain document " * 50)),
        ({"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "chunk " * 80}]}},
         cl100k("chunk " * 80)),
        ({"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}}, PDF_PAGE_TOKENS),
        ({"type": "search_result", "source": "https://x", "title": "t",
          "content": [{"type": "text", "text": "r " * 90}]},
         cl100k("r " * 90)),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(1000, 1000)}}, 1334),
    ],
    ids=lambda value: value["type"] if isinstance(value, dict) else "",
)
def test_every_block_type_counts_its_content(block: dict[str, Any], expected_at_least: int) -> None:
    counter = TokenCounter()
    empty = counter.count(request(user()))
    assert counter.count(request(user(block))) - empty >= expected_at_least


def test_tools_count_name_description_schema_and_the_tool_use_prompt() -> None:
    schema = {"type": "object", "properties": {"command": {"type": "string", "description": "the shell command " * 9}}}
    tool = {"name": "Bash", "description": "Runs a command in a persistent shell. " * 20, "input_schema": schema}
    server_tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
    counter = TokenCounter()
    base = counter.count(request(user()))
    with_tool = counter.count(request(user(), tools=[tool]))
    assert with_tool - base >= (tokens.TOOL_USE_SYSTEM_PROMPT + cl100k(tool["description"])
                                + cl100k(json.dumps(schema, separators=(",", ":"))))
    assert counter.count(request(user(), tools=[tool, server_tool])) - with_tool >= cl100k(json.dumps(server_tool))
    assert counter.count(request(user(), tools=[])) == base


def test_counting_only_text_would_undercount_a_tool_heavy_turn_wildly() -> None:
    # PROTOCOL.md §5: estimators that skip tool_use/tool_result/thinking make Claude Code compact far too late.
    big_input = {"file_path": "/a.py", "content": "def f(x):\n    return x * 2\n" * 200}
    body = request(
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "plan " * 300, "signature": "s"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": big_input}]},
        user({"type": "tool_result", "tool_use_id": "toolu_1", "content": "wrote 400 lines " * 100}),
    )
    assert TokenCounter().count(body) > 3000


def test_count_request_tokens_uses_one_process_wide_counter() -> None:
    body = load_fixture("print-mode-first-turn.json")["body"]
    assert count_request_tokens(body) == TokenCounter().count(body)
    assert count_request_tokens(body) == count_request_tokens(orjson.loads(orjson.dumps(body)))


# --- images and PDFs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(1280, 720), (1280, 720)),
        (gif(320, 200), (320, 200)),
        (jpeg(800, 600), (800, 600)),
        (jpeg(4032, 3024, exif_bytes=40_000), (4032, 3024)),  # an EXIF block with a thumbnail before the frame
        (webp_vp8x(1920, 1080), (1920, 1080)),
        (webp_vp8l(640, 480), (640, 480)),
        (webp_vp8(300, 150), (300, 150)),
    ],
)
def test_image_size_is_read_from_the_header(data: str, size: tuple[int, int]) -> None:
    assert image_size(data) == size


def test_image_in_the_captured_tool_result_is_read() -> None:
    block = load_fixture("image-tool-result.json")["body"]["messages"][-1]["content"][0]["content"][0]
    assert image_size(block["source"]["data"]) == (8, 8)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(8, 8), 1),
        (png(1000, 1000), math.ceil(1000 * 1000 / 750)),
        (png(1568, 400), math.ceil(1568 * 400 / 750)),
        (png(3136, 400), math.ceil(1568 * 200 / 750)),  # the long edge is scaled down to 1568 first
        (png(4000, 3000), IMAGE_TOKENS),  # ~1.15 megapixels at most
        ("not base64 at all!", IMAGE_TOKENS),
        (b64(b"BM" + b"\x00" * 40), IMAGE_TOKENS),  # a BMP: format unknown, the flat estimate
        ("", IMAGE_TOKENS),
        (jpeg(100, 100)[:20], IMAGE_TOKENS),  # truncated before the frame header
    ],
)
def test_image_tokens_follow_anthropics_formula(data: str, expected: int) -> None:
    assert image_tokens(data) == expected


def pdf(pages: int, compressed: bool = False) -> str:
    objects = b"".join(b"%d 0 obj << /Type /Page /Parent 2 0 R >> endobj\n" % (3 + page) for page in range(pages))
    tree = b"2 0 obj << /Type /Pages /Count %d >> endobj\n" % pages
    return b64(b"%PDF-1.7\n" + (tree if compressed else tree + objects) + b"%%EOF")


@pytest.mark.parametrize(("data", "pages"),
                         [(pdf(3), 3), (pdf(12, compressed=True), 12), (b64(b"%PDF" + b"x" * 120_000), 3)])
def test_pdf_documents_count_per_page(data: str, pages: int) -> None:
    block = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}
    counter = TokenCounter()
    added = counter.count(request(user(block))) - counter.count(request(user()))
    assert added == tokens.BLOCK_OVERHEAD + pages * PDF_PAGE_TOKENS


# --- the cache ---------------------------------------------------------------------------------------------------


@pytest.fixture
def tokenizations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every string the counter hands to tiktoken."""
    seen: list[str] = []
    encoding = tokens.load_encoding()

    class Recording:
        def encode_ordinary(self, text: str) -> list[int]:
            seen.append(text)
            return encoding.encode_ordinary(text)

    monkeypatch.setattr(tokens, "load_encoding", lambda: Recording())
    return seen


def test_a_repeated_request_costs_no_tokenization(tokenizations: list[str]) -> None:
    raw = orjson.dumps(load_fixture("bash-tool-result-turn2.json")["body"])
    counter = TokenCounter()
    first = counter.count(orjson.loads(raw))
    assert tokenizations
    tokenizations.clear()
    assert counter.count(orjson.loads(raw)) == first  # a fresh parse: equal strings, not the same objects
    assert tokenizations == []


def test_the_next_turn_tokenizes_only_its_new_messages(tokenizations: list[str]) -> None:
    body = load_fixture("bash-tool-call-turn1.json")["body"]
    counter = TokenCounter()
    counter.count(body)
    tokenizations.clear()
    later = orjson.loads(orjson.dumps(body))
    later["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "Running it now."}]})
    counter.count(later)
    assert tokenizations == ["Running it now."]


def test_the_context_burst_shares_pieces_across_requests(tokenizations: list[str]) -> None:
    big = load_fixture("interactive-first-turn.json")["body"]
    counter = TokenCounter()
    counter.count(big)
    tokenizations.clear()
    for tool in big["tools"]:  # /context counts each tool on its own
        counter.count({"model": big["model"], "messages": [{"role": "user", "content": "foo"}], "tools": [tool]})
    assert tokenizations == ["foo"]


def test_the_cache_is_bounded_by_entries_and_by_key_length() -> None:
    counter = TokenCounter(max_entries=3)
    for word in ("alpha", "beta", "gamma", "delta", "epsilon"):
        counter.count(request({"role": "user", "content": word}))
    assert len(counter) == 3
    sized = TokenCounter(max_key_chars=1000)
    for index in range(10):
        sized.count(request({"role": "user", "content": f"{index} " + "x" * 400}))
    assert len(sized) == 2


def test_the_cache_evicts_the_least_recently_used_piece(tokenizations: list[str]) -> None:
    counter = TokenCounter(max_entries=2)
    for word in ("keep", "drop", "keep", "new"):
        counter.count(request({"role": "user", "content": word}))
    tokenizations.clear()
    counter.count(request({"role": "user", "content": "keep"}))
    assert tokenizations == []
    counter.count(request({"role": "user", "content": "drop"}))
    assert tokenizations == ["drop"]


def test_a_pdf_estimate_never_answers_for_the_same_string_counted_as_text() -> None:
    data = pdf(4)
    counter = TokenCounter()
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}
    counter.count(request(user(document)))
    as_text = counter.count(request({"role": "user", "content": data})) - counter.count(request(user()))
    assert as_text == cl100k(data)


# --- cheap to import, total on anything parse_request accepts ------------------------------------------------------


def test_importing_the_module_does_not_load_tiktoken() -> None:
    probe = "import sys, ccm.tokens; print('tiktoken' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"


json_values = st.recursive(
    # Integers within 64 bits: orjson.loads turns larger ones into floats, so a parsed body never holds them.
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
block_types = st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
                               "server_tool_use", "web_search_tool_result", "search_result", "tool_reference", "x"])
any_block = st.fixed_dictionaries({"type": block_types}, optional={
    field: json_values | st.text(max_size=40)
    for field in ("text", "source", "input", "content", "thinking", "data", "name", "title", "tool_name")
})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["system", "messages", "tools", "model"]),
                       json_values | st.lists(st.fixed_dictionaries({"content": st.lists(any_block, max_size=3)
                                                                      | json_values}) | any_block, max_size=3)))
def test_any_json_shaped_body_gets_a_count(body: dict[str, Any]) -> None:
    assert TokenCounter().count(body) >= tokens.REQUEST_OVERHEAD


@pytest.mark.parametrize("name", fixture_names())
def test_what_parse_request_returns_is_counted(name: str) -> None:
    captured = load_fixture(name)
    body = parse_request(orjson.dumps(captured["body"]), count_only="count_tokens" in captured["path"])
    assert count_request_tokens(body) > 0
