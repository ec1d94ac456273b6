"""Gemini's reply side: `generateContent` responses and `streamGenerateContent` events → Anthropic.

`GeminiReader` reads each full `GenerateContentResponse` and writes Anthropic events through an `EventWriter`;
`translate_response` folds a non-stream answer.

Reading parts, in order:
- `thought: true` text → thinking; other text → text; empty text is skipped.
- `functionCall` → a whole `tool_use` block (start, the complete `args` JSON as one delta, stop), its name mapped
  back to the client's (`tool_names`). Every call is its
  own block, so parallel calls that each arrive at part index 0 in separate chunks are numbered by arrival. Ids
  follow the writer's tool-id policy (`reply`): Gemini's when valid, encoded when not (decoded again by
  `gemini.request`), minted when missing or repeated.
- a `thoughtSignature` on a call → the signature of a thinking block just before that call (the open thinking block
  when there is one, else an empty one), prefixed so `gemini.request` puts it back on the same call next turn.
- Google Search grounding (quirk `google_search`) → `server_tool_use` + `web_search_tool_result` blocks at the end,
  so Claude Code's WebSearch tool sees the sources.

Stop reasons: STOP with calls → `tool_use`, STOP → `end_turn`, MAX_TOKENS → `max_tokens`, SAFETY / RECITATION /
BLOCKLIST / PROHIBITED_CONTENT / SPII / IMAGE_SAFETY and `promptFeedback.blockReason` → `refusal` (with a short text
block naming the reason when nothing else was produced, so the turn Claude Code keeps in its history is not empty),
MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL → `UpstreamError` 502 (reason `protocol`, retryable by policy).
Usage: input = prompt − cached, cache_read = cached, output = candidates + thoughts; the last report wins.
A stream that ends before a finishReason was cut short (`UpstreamError` reason `truncated`); a whole non-stream
answer without one is malformed (`protocol`).
"""

from __future__ import annotations

from typing import Any

import orjson

from ccm.providers.base import Usage
from ccm.providers.gemini.request import SIGNATURE_PREFIX
from ccm.providers.reply import EventWriter, fold_message, parse_event
from ccm.providers.tool_names import GEMINI, ToolNames
from ccm.upstream.errors import protocol_error, truncated_error, upstream_error
from ccm.upstream.sse import ServerEvent
from ccm.usage import from_gemini

_REFUSALS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})


_BROKEN_CALLS = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})


class GeminiReader:
    """`GenerateContentResponse` objects in, Anthropic events out through `writer` (a `StreamTranslator`)."""

    def __init__(
        self, provider: str, model: str, usage: Usage, names: ToolNames | None = None, input_tokens: int | None = None
    ) -> None:
        self.provider = provider
        self.writer = EventWriter(model, usage, input_estimate=input_tokens)
        self.names = names or ToolNames(GEMINI)
        self._finish_reason: str | None = None
        self._blocked: str | None = None
        self._grounding: dict[str, Any] | None = None

    def feed(self, event: ServerEvent) -> None:
        data = parse_event(self.provider, event)
        self.read(data)

    def read(self, data: dict[str, Any]) -> None:
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            status = code if isinstance(code, int) else 500
            raise upstream_error(self.provider, status, orjson.dumps(data), {})
        if isinstance(data.get("usageMetadata"), dict):
            self._usage(data["usageMetadata"])
        self.writer.start()
        feedback = data.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self._blocked = str(feedback["blockReason"])
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            return
        candidate = candidates[0]
        content = candidate.get("content")
        for part in content.get("parts") or () if isinstance(content, dict) else ():
            if isinstance(part, dict):
                self._part(part)
        if isinstance(candidate.get("groundingMetadata"), dict):
            self._grounding = candidate["groundingMetadata"]
        reason = candidate.get("finishReason")
        if reason in _BROKEN_CALLS:
            detail = candidate.get("finishMessage") or "the model produced an invalid function call"
            raise protocol_error(self.provider, f"upstream {self.provider!r} stopped with {reason}: {detail}")
        if isinstance(reason, str) and reason:
            self._finish_reason = reason

    @property
    def ended(self) -> bool:
        """Whether a finishReason (or a blocked prompt) came: the answer's end."""
        return self._finish_reason is not None or self._blocked is not None

    def finish(self) -> None:
        if not self.ended:
            raise truncated_error(self.provider, "the stream ended before a finishReason")
        self._write_grounding()
        writer = self.writer
        if self._blocked or self._finish_reason in _REFUSALS:
            if not writer.has_blocks:
                writer.text(f"[Gemini declined to answer: {self._blocked or self._finish_reason}]")
            writer.finish("refusal")
        elif self._finish_reason == "MAX_TOKENS":
            writer.finish("max_tokens")
        else:
            writer.finish("tool_use" if writer.saw_tool_use else "end_turn")

    def _part(self, part: dict[str, Any]) -> None:
        call = part.get("functionCall")
        if isinstance(call, dict):
            signature = part.get("thoughtSignature")
            if isinstance(signature, str) and signature:
                self.writer.signature(SIGNATURE_PREFIX + signature)
            args = call.get("args") if isinstance(call.get("args"), dict) else {}
            writer = self.writer
            name = self.names.client(str(call.get("name", "")))
            writer.tool_use(writer.tool_id(call.get("id")), name, orjson.dumps(args).decode())
            return
        text = part.get("text")
        if isinstance(text, str):
            if part.get("thought") is True:
                self.writer.thinking(text)
            else:
                self.writer.text(text)

    def _usage(self, metadata: dict[str, Any]) -> None:
        self.writer.usage.take(from_gemini(metadata))

    def _write_grounding(self) -> None:
        grounding = self._grounding
        if not grounding:
            return
        results = []
        for chunk in grounding.get("groundingChunks") or ():
            web = chunk.get("web") if isinstance(chunk, dict) else None
            if isinstance(web, dict) and web.get("uri"):
                results.append(
                    {
                        "type": "web_search_result",
                        "url": web["uri"],
                        "title": web.get("title") or web["uri"],
                        "encrypted_content": "",
                        "page_age": None,
                    }
                )
        if not results:
            return
        queries = [q for q in grounding.get("webSearchQueries") or () if isinstance(q, str)]
        search_id = "srvtoolu_" + self.writer.tool_id(None).removeprefix("toolu_")
        self.writer.start_tool(search_id, "web_search", kind="server_tool_use")
        self.writer.tool_arguments(orjson.dumps({"query": "; ".join(queries)}).decode())
        self.writer.close()
        self.writer.block({"type": "web_search_tool_result", "tool_use_id": search_id, "content": results})


def _count(metadata: dict[str, Any], key: str) -> int:
    value = metadata.get(key)
    return value if isinstance(value, int) else 0


def translate_response(
    data: dict[str, Any], provider: str, model: str, usage: Usage, names: ToolNames | None = None
) -> dict[str, Any]:
    """A non-stream `GenerateContentResponse` as a complete Anthropic message."""
    reader = GeminiReader(provider, model, usage, names)
    reader.read(data)
    if not reader.ended:  # a whole body (it parsed) without its end: malformed, not cut short
        raise protocol_error(provider, f"upstream {provider!r} answered without a finishReason")
    reader.finish()
    return fold_message(reader.writer.take())
