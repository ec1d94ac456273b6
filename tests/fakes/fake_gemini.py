"""A strict fake of Gemini's `generateContent` / `streamGenerateContent?alt=sse`, for the Gemini adapter's tests.

`check_gemini_request(model, body)` validates a request the way the real API rejects requests (PROTOCOL §7 and the
errors quoted in public issues), raising `GeminiRejected` with Gemini's own wording:
- any key outside the schema allow-list, anywhere — top level, contents, parts, tools, function parameters at any
  depth, generationConfig, thinkingConfig: `Invalid JSON payload received. Unknown name "X" at '…': Cannot find field.`
- roles only `user`/`model`; parts non-empty, one data field each, no empty text; `functionCall.args` and
  `functionResponse.response` objects; a function-call turn right after a user turn or a function-response turn, and
  answered next turn by exactly as many `functionResponse` parts, names matching;
- `toolConfig.functionCallingConfig` only beside `functionDeclarations` ("Function calling config is set without
  function_declarations", e.g. with Google Search alone);
- schemas: one `type` name (a list is "Proto field is not repeating"), `properties`/`required` only on objects, never
  an empty `properties` map, `required` naming declared properties, arrays with `items`, `enum` only on strings,
  `format` only `enum`/`date-time`, function `parameters` an OBJECT;
- Gemini 3 models (`gemini-3…` ids): the first `functionCall` of every model turn carries a `thoughtSignature` this
  fake issued, or the documented `skip_thought_signature_validator`; `thinkingLevel` only on Gemini 3 (Pro: low/high),
  never together with `thinkingBudget`; `maxOutputTokens` at most `max_output`.

`FakeGemini` serves it over ASGI, checks `x-goog-api-key`, records each request, and answers scripted turns: a turn
is a list of `GenerateContentResponse` chunks (one SSE event each; merged into one response when not streaming), or a
callable(body) returning one. On Gemini 3 it signs the first call of each turn, like the real API, and remembers the
signatures so the next request can be checked.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .upstream import WholeBodyFake

Chunk = dict[str, Any]
Turn = list[Chunk] | Callable[[dict[str, Any]], list[Chunk]]

SKIP_SIGNATURE = "skip_thought_signature_validator"

_TOP = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent"}
_PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult"}
_PART = _PART_DATA | {"thought", "thoughtSignature", "videoMetadata"}
_TOOL = {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"}
_DECLARATION = {"name", "description", "parameters", "parametersJsonSchema", "response", "behavior"}
_SCHEMA = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties", "required",
    "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering",
    "default", "items", "minimum", "maximum",
}
_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_GENERATION = {
    "stopSequences", "responseMimeType", "responseSchema", "candidateCount", "maxOutputTokens", "temperature", "topP",
    "topK", "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs", "thinkingConfig",
    "mediaResolution", "responseModalities",
}
_THINKING = {"includeThoughts", "thinkingBudget", "thinkingLevel"}
_FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")  # a letter or `_` first, at most 128


class GeminiRejected(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def _unknown(keys: Any, allowed: set[str], where: str) -> None:
    for key in keys:
        if key not in allowed:
            raise GeminiRejected(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': '
                                 "Cannot find field.")


def is_gemini_3(model: str) -> bool:
    found = re.search(r"gemini-(\d+)", model)
    return found is None or int(found.group(1)) >= 3


def check_gemini_request(
    model: str, body: Any, issued: set[str] = frozenset(), max_output: int = 65536  # type: ignore[assignment]
) -> None:
    if not isinstance(body, dict):
        raise GeminiRejected("Invalid JSON payload received. Expected an object.")
    _unknown(body, _TOP, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise GeminiRejected("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        _check_content(content, f"contents[{i}]")
    _check_call_turns(contents)
    if is_gemini_3(model):
        _check_signatures(contents, issued)
    system = body.get("systemInstruction")
    if system is not None:
        _unknown(system, {"parts", "role"}, "system_instruction")
        for j, part in enumerate(system.get("parts") or ()):
            _unknown(part, {"text"}, f"system_instruction.parts[{j}]")
            if not part.get("text"):
                raise GeminiRejected("Unable to submit request because it has an empty text parameter.")
    for t, tool in enumerate(body.get("tools") or ()):
        _unknown(tool, _TOOL, f"tools[{t}]")
        for d, declaration in enumerate(tool.get("functionDeclarations") or ()):
            _check_declaration(declaration, f"tools[{t}].function_declarations[{d}]")
    _check_tool_config(body.get("toolConfig"), body.get("tools") or ())
    _check_generation(model, body.get("generationConfig"), max_output)


def _check_content(content: Any, where: str) -> None:
    _unknown(content, {"role", "parts"}, where)
    if content.get("role") not in ("user", "model"):
        raise GeminiRejected(f"* GenerateContentRequest.{where}.role: Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise GeminiRejected(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts):
        here = f"{where}.parts[{j}]"
        _unknown(part, _PART, here)
        data = [k for k in part if k in _PART_DATA]
        if len(data) != 1:
            raise GeminiRejected(f"* GenerateContentRequest.{here}.data: "
                                 "required oneof field 'data' must have one initialized field")
        if "text" in part and (not isinstance(part["text"], str) or not part["text"]):
            raise GeminiRejected("Unable to submit request because it has an empty text parameter.")
        if "inlineData" in part:
            _unknown(part["inlineData"], {"mimeType", "data"}, f"{here}.inline_data")
            if not part["inlineData"].get("mimeType") or not part["inlineData"].get("data"):
                raise GeminiRejected(f"* GenerateContentRequest.{here}.inline_data: mime_type and data are required")
        if "fileData" in part:
            _unknown(part["fileData"], {"mimeType", "fileUri"}, f"{here}.file_data")
            if not part["fileData"].get("fileUri"):
                raise GeminiRejected(f"* GenerateContentRequest.{here}.file_data.file_uri: missing field")
        if "functionCall" in part:
            call = part["functionCall"]
            _unknown(call, {"id", "name", "args"}, f"{here}.function_call")
            if not isinstance(call.get("args", {}), dict):
                raise GeminiRejected(f"Invalid value at '{here}.function_call.args' "
                                     "(type.googleapis.com/google.protobuf.Struct)")
        if "functionResponse" in part:
            response = part["functionResponse"]
            _unknown(response, {"id", "name", "response", "parts", "willContinue", "scheduling"},
                     f"{here}.function_response")
            if not isinstance(response.get("response"), dict):
                raise GeminiRejected(
                    f"Invalid value at '{here}.function_response.response' (type.googleapis.com/google.protobuf.Struct)"
                )
            if not response.get("name"):
                raise GeminiRejected(f"* GenerateContentRequest.{here}.function_response.name: Name cannot be empty.")
        if "thoughtSignature" in part and not isinstance(part["thoughtSignature"], str):
            raise GeminiRejected(f"Invalid value at '{here}.thought_signature' (TYPE_BYTES)")


def _check_call_turns(contents: list[dict[str, Any]]) -> None:
    for i, content in enumerate(contents):
        calls = [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]
        responses = [p["functionResponse"]["name"] for p in content["parts"] if "functionResponse" in p]
        if calls:
            previous = contents[i - 1] if i else None
            if previous is None or previous["role"] != "user":
                raise GeminiRejected(
                    "Please ensure that function call turn comes immediately after a user turn or after a function "
                    "response turn."
                )
            following = contents[i + 1] if i + 1 < len(contents) else None
            if following is not None:
                answered = [p["functionResponse"]["name"] for p in following["parts"] if "functionResponse" in p]
                if sorted(answered) != sorted(calls):
                    raise GeminiRejected(
                        "Please ensure that the number of function response parts is equal to the number of function "
                        "call parts of the function call turn."
                    )
        if responses:
            previous = contents[i - 1] if i else None
            if previous is None or not any("functionCall" in p for p in previous["parts"]):
                raise GeminiRejected(
                    "Please ensure that function response turn comes immediately after a function call turn."
                )


def _check_signatures(contents: list[dict[str, Any]], issued: set[str]) -> None:
    for i, content in enumerate(contents):
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is None:
            continue
        signature = first.get("thoughtSignature")
        if signature is None:
            raise GeminiRejected(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools to "
                f"work correctly. Additional data, function call `default_api:{first['functionCall']['name']}`, "
                f"position {i + 1}."
            )
        if signature != SKIP_SIGNATURE and signature not in issued:
            raise GeminiRejected(f"Corrupted thought signature at contents[{i}].")


def _check_declaration(declaration: Any, where: str) -> None:
    _unknown(declaration, _DECLARATION, where)
    if not _FUNCTION_NAME.match(str(declaration.get("name", ""))):
        raise GeminiRejected(f"* GenerateContentRequest.{where}.name: Invalid function name.")
    parameters = declaration.get("parameters")
    if parameters is not None:
        if str(parameters.get("type", "")).lower() != "object":
            raise GeminiRejected(f"* GenerateContentRequest.{where}.parameters.type: must be OBJECT")
        check_schema(parameters, f"{where}.parameters")


def check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise GeminiRejected(f"Invalid value at '{where}' "
                             "(type.googleapis.com/google.ai.generativelanguage.v1beta.Schema)")
    _unknown(schema, _SCHEMA, where)
    raw_type = schema.get("type")
    if isinstance(raw_type, list):
        raise GeminiRejected("Invalid JSON payload received. Proto field is not repeating, cannot start list. "
                             f"at '{where}.type'")
    if raw_type is None and "anyOf" not in schema:
        raise GeminiRejected(f"* GenerateContentRequest.{where}.type: must be specified")
    kind = str(raw_type).lower() if raw_type is not None else None
    if kind is not None and kind not in _TYPES:
        raise GeminiRejected(f"Invalid value at '{where}.type' "
                             f"(type.googleapis.com/google.ai.generativelanguage.v1beta.Type), \"{raw_type}\"")
    if ("properties" in schema or "required" in schema) and kind != "object":
        raise GeminiRejected(f"* GenerateContentRequest.{where}.properties: only allowed for OBJECT type")
    if "properties" in schema:
        properties = schema["properties"]
        if not isinstance(properties, dict) or not properties:
            raise GeminiRejected(f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type")
        for name, value in properties.items():
            check_schema(value, f"{where}.properties[{name}].value")
    for name in schema.get("required", ()):
        if name not in schema.get("properties", {}):
            raise GeminiRejected(f"* GenerateContentRequest.{where}.required[{name}]: property is not defined")
    if kind == "array":
        if "items" not in schema:
            raise GeminiRejected(f"* GenerateContentRequest.{where}.items: missing field.")
        check_schema(schema["items"], f"{where}.items")
    elif "items" in schema:
        raise GeminiRejected(f"* GenerateContentRequest.{where}.items: only allowed for ARRAY type")
    if "enum" in schema and (kind != "string" or not all(isinstance(v, str) for v in schema["enum"])):
        raise GeminiRejected(f"* GenerateContentRequest.{where}.enum: only allowed for STRING type")
    if "format" in schema and schema["format"] not in ("enum", "date-time"):
        raise GeminiRejected(f"* GenerateContentRequest.{where}.format: "
                             "only 'enum' and 'date-time' are supported for STRING type")
    if "nullable" in schema and not isinstance(schema["nullable"], bool):
        raise GeminiRejected(f"Invalid value at '{where}.nullable' (TYPE_BOOL)")
    for k, branch in enumerate(schema.get("anyOf") or ()):
        check_schema(branch, f"{where}.any_of[{k}]")


def _check_tool_config(config: Any, tools: Any) -> None:
    if config is None:
        return
    _unknown(config, {"functionCallingConfig", "retrievalConfig"}, "tool_config")
    if "functionCallingConfig" in config and not any(t.get("functionDeclarations") for t in tools):
        # Google Search alone (`tools: [{googleSearch: {}}]`) with a calling mode, even AUTO
        raise GeminiRejected("Function calling config is set without function_declarations.")
    calling = config.get("functionCallingConfig") or {}
    _unknown(calling, {"mode", "allowedFunctionNames"}, "tool_config.function_calling_config")
    if calling.get("mode") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
        raise GeminiRejected(f"Invalid value at 'tool_config.function_calling_config.mode', \"{calling.get('mode')}\"")
    if calling.get("allowedFunctionNames") and calling["mode"] not in ("ANY", "VALIDATED"):
        raise GeminiRejected("allowed_function_names may only be set when the mode is ANY.")


def _check_generation(model: str, config: Any, max_output: int) -> None:
    if config is None:
        return
    _unknown(config, _GENERATION, "generation_config")
    if config.get("maxOutputTokens", 0) > max_output:
        raise GeminiRejected(
            f"The maximum number of tokens specified in the request ({config['maxOutputTokens']}) exceeds the "
            f"model's maximum ({max_output})."
        )
    if len(config.get("stopSequences", ())) > 5:
        raise GeminiRejected("* GenerateContentRequest.generation_config.stop_sequences: at most 5 are allowed")
    thinking = config.get("thinkingConfig")
    if thinking is None:
        return
    _unknown(thinking, _THINKING, "generation_config.thinking_config")
    if "thinkingLevel" in thinking:
        if "thinkingBudget" in thinking:
            raise GeminiRejected("You can only set one of thinking budget and thinking level.")
        if not is_gemini_3(model):
            raise GeminiRejected("Thinking level is not supported for this model.")
        allowed = ("low", "high") if "pro" in model else ("minimal", "low", "medium", "high")
        if str(thinking["thinkingLevel"]).lower() not in allowed:
            raise GeminiRejected(f"Thinking level {thinking['thinkingLevel']} is not supported for this model.")


# --- the ASGI app --------------------------------------------------------------------------------------------------


@dataclass
class GeminiExchange:
    model: str
    stream: bool
    body: dict[str, Any]
    headers: dict[str, str]
    rejected: str | None = None


@dataclass
class FakeGemini(WholeBodyFake):
    """Answers scripted turns (default: a short text). Records every request in `exchanges`."""

    key: str = "gemini-test-key"
    max_output: int = 65536
    default: Turn = field(default_factory=lambda: [text_chunk("Hello from fake Gemini.", finish="STOP")])
    exchanges: list[GeminiExchange] = field(default_factory=list)
    issued: set[str] = field(default_factory=set)
    _turns: deque[Turn] = field(default_factory=deque)
    _serial: itertools.count = field(default_factory=itertools.count)

    def respond(self, scope: dict[str, Any], raw: bytes) -> tuple[int, bytes, bytes]:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        found = re.fullmatch(r"/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)", scope["path"])
        if scope["method"] != "POST" or found is None:
            return _error(404, f"Method not found: {scope['method']} {scope['path']}", "NOT_FOUND")
        model, method = found.groups()
        stream = method == "streamGenerateContent"
        if stream and scope.get("query_string", b"") != b"alt=sse":
            return _error(400, "streamGenerateContent needs alt=sse here", "INVALID_ARGUMENT")
        if headers.get("x-goog-api-key") != self.key:
            return _error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
        body = orjson.loads(raw)
        exchange = GeminiExchange(model, stream, body, headers)
        self.exchanges.append(exchange)
        try:
            check_gemini_request(model, body, self.issued, self.max_output)
        except GeminiRejected as rejected:
            exchange.rejected = rejected.message
            return _error(rejected.status, rejected.message, rejected.code)
        chunks = self.next_turn(body)
        if is_gemini_3(model):
            chunks = self._signed(chunks)
        if stream:
            frames = b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)
            return 200, b"text/event-stream", frames
        return 200, b"application/json", orjson.dumps(merge_chunks(chunks))

    def _signed(self, chunks: list[Chunk]) -> list[Chunk]:
        """Like Gemini 3: the first functionCall part of the turn carries a thought signature."""
        signed = orjson.loads(orjson.dumps(chunks))
        for chunk in signed:
            for candidate in chunk.get("candidates") or ():
                for part in (candidate.get("content") or {}).get("parts") or ():
                    if "functionCall" in part:
                        if "thoughtSignature" not in part:
                            part["thoughtSignature"] = f"c2lnbmF0dXJl{next(self._serial)}=="
                        self.issued.add(part["thoughtSignature"])
                        return signed
        return signed


def _error(status: int, message: str, code: str) -> tuple[int, bytes, bytes]:
    body = orjson.dumps({"error": {"code": status, "message": message, "status": code}})
    return status, b"application/json", body


def merge_chunks(chunks: list[Chunk]) -> Chunk:
    """What a non-stream call answers for the same turn: all parts in one candidate, the last finish and usage."""
    parts: list[dict[str, Any]] = []
    merged: Chunk = {}
    candidate: dict[str, Any] = {}
    for chunk in chunks:
        for key in ("usageMetadata", "promptFeedback", "modelVersion", "responseId"):
            if key in chunk:
                merged[key] = chunk[key]
        for c in chunk.get("candidates") or ():
            parts.extend((c.get("content") or {}).get("parts") or ())
            candidate.update({k: v for k, v in c.items() if k != "content"})
    if candidate or parts:
        merged["candidates"] = [{"content": {"role": "model", "parts": parts}, **candidate}]
    return merged


def text_chunk(text: str, *, finish: str | None = None, thought: bool = False,
               usage: dict[str, int] | None = None) -> Chunk:
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    return _chunk([part], finish, usage)


def call_chunk(name: str, args: dict[str, Any], *, id: str | None = None, finish: str | None = None,
               signature: str | None = None, usage: dict[str, int] | None = None) -> Chunk:
    call: dict[str, Any] = {"name": name, "args": args}
    if id is not None:
        call["id"] = id
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return _chunk([part], finish, usage)


def _chunk(parts: list[dict[str, Any]], finish: str | None, usage: dict[str, int] | None) -> Chunk:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    chunk: Chunk = {"candidates": [candidate]}
    if usage:
        chunk["usageMetadata"] = usage
    return chunk
