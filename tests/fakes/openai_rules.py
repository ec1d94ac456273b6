"""What OpenAI's Chat Completions API rejects, as a function: `check_chat_request(body, limits)` raises `Rejected`
(400, with OpenAI's `param`) on the first problem, worded like the real API.

Checked: model; messages (non-empty list, known roles, content shapes, no empty content parts, no images in `tool`
messages, `""` assistant content beside tool_calls); the tool-call sequence (a `tool` message answers an id of the
assistant message right before its run of tool messages, and every id is answered before the next non-tool
message); tools (type `function`, names `^[a-zA-Z0-9_-]{1,64}$`, `parameters` an object schema); tool_choice and
parallel_tool_calls (need tools; a named function must exist); max_tokens / max_completion_tokens (positive, not
both, at most the cap); stream_options only with stream; stop (≤ 4); temperature, top_p, reasoning_effort, user
length; and in strict mode any unknown top-level parameter and `cache_control` anywhere (Anthropic-only fields).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .upstream import Rejected

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

KNOWN_PARAMS = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction",
        "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
        "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
USER_PARTS = frozenset({"text", "image_url", "input_audio", "file"})
# Fields a message may carry; `reasoning_content` is the DeepSeek-style replay that OpenAI-compatible hosts accept.
MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio",
                            "reasoning_content"})


@dataclass(frozen=True)
class Limits:
    max_output: int | None = None  # the model's output cap: larger max_tokens is a 400, as with real providers
    strict: bool = True  # reject unknown top-level parameters and cache_control anywhere
    max_user_length: int = 64


def invalid(message: str, param: str | None = None, code: str | None = None) -> Rejected:
    return Rejected(400, message, "invalid_request_error", param, code)


def check_chat_request(body: Any, limits: Limits) -> None:
    if not isinstance(body, dict):
        raise invalid("Invalid type for request body: expected an object.")
    if limits.strict:
        for name in body:
            if name not in KNOWN_PARAMS:
                raise invalid(f"Unrecognized request argument supplied: {name}", name)
        path = _find_key(body, "cache_control", "")
        if path is not None:
            raise invalid(f"Unrecognized request argument supplied: {path}", path)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter", "model")
    _check_messages(body.get("messages"), limits)
    _check_tools(body)
    _check_numbers(body, limits)
    if "stream_options" in body and body.get("stream") is not True:
        raise invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream")


def _check_messages(messages: Any, limits: Limits) -> None:
    if not isinstance(messages, list):
        raise invalid("Invalid type for 'messages': expected an array.", "messages")
    if not messages:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages")
    unanswered: list[str] = []  # ids of the last assistant's tool_calls not yet answered
    answerable = False  # inside the run of tool messages that follows an assistant with tool_calls
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"Invalid type for '{where}': expected an object.", where)
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise invalid(
                f"Invalid value: '{role}'. "
                "Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'.",
                f"{where}.role",
            )
        if limits.strict:
            for name in message:
                if name not in MESSAGE_FIELDS:
                    raise invalid(f"Unrecognized request argument supplied: {where}.{name}", f"{where}.{name}")
        if role == "tool":
            if not answerable:
                raise invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
                    "'tool_calls'.",
                    f"{where}.role",
                )
            call_id = message.get("tool_call_id")
            if call_id not in unanswered:
                raise invalid(f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
                              "previous message.", f"{where}.tool_call_id")
            unanswered.remove(call_id)
            _check_content(message.get("content"), where, allowed=frozenset({"text"}), required=True)
            continue
        if unanswered:
            raise invalid(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(unanswered)}",
                "messages",
            )
        answerable = False
        if role in ("system", "developer"):
            _check_content(message.get("content"), where, allowed=frozenset({"text"}), required=True)
        elif role == "user":
            _check_content(message.get("content"), where, allowed=USER_PARTS, required=True)
        else:
            calls = message.get("tool_calls")
            content = message.get("content")
            if calls is not None:
                unanswered = _check_tool_calls(calls, where)
                answerable = True
                if content == "":
                    raise invalid(
                        f"Invalid value for '{where}.content': an assistant message with 'tool_calls' must have "
                        "'content' null or a non-empty string.",
                        f"{where}.content",
                    )
            _check_content(content, where, allowed=frozenset({"text", "refusal"}), required=calls is None)
    if unanswered:
        raise invalid(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(unanswered)}",
            "messages",
        )


def _check_content(content: Any, where: str, allowed: frozenset[str], required: bool) -> None:
    if content is None:
        if required:
            raise invalid(f"Invalid value for '{where}.content': expected a string or an array, got null.",
                          f"{where}.content")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(f"Invalid type for '{where}.content': expected one of a string or array of objects.",
                      f"{where}.content")
    if not content:
        raise invalid(f"Invalid '{where}.content': empty array. Expected an array with minimum length 1.",
                      f"{where}.content")
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise invalid(f"Invalid value: '{kind}'. Supported values are: {', '.join(sorted(allowed))}.",
                          f"{here}.type")
        if kind == "text" and (not isinstance(part.get("text"), str) or not part["text"]):
            raise invalid(f"Invalid '{here}.text': empty string. Expected a string with minimum length 1.",
                          f"{here}.text")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not (
                re.match(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$", url) or url.startswith(("http://", "https://"))
            ):
                raise invalid(f"Invalid '{here}.image_url.url': expected a base64 data URL or an http(s) URL.",
                              f"{here}.image_url.url", "invalid_image_url")
        if kind == "file":
            file = part.get("file")
            if not isinstance(file, dict) or not (file.get("file_data") or file.get("file_id")):
                raise invalid(f"Invalid '{here}.file': expected 'file_data' or 'file_id'.", f"{here}.file")


def _check_tool_calls(calls: Any, where: str) -> list[str]:
    if not isinstance(calls, list) or not calls:
        raise invalid(f"Invalid '{where}.tool_calls': expected a non-empty array.", f"{where}.tool_calls")
    ids: list[str] = []
    for k, call in enumerate(calls):
        here = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not call["id"]:
            raise invalid(f"Missing required parameter: '{here}.id'.", f"{here}.id")
        if call.get("type") != "function":
            raise invalid(f"Invalid value for '{here}.type': expected 'function'.", f"{here}.type")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"Missing required parameter: '{here}.function.name'.", f"{here}.function.name")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise invalid(f"Invalid type for '{here}.function.arguments': expected a string.",
                          f"{here}.function.arguments")
        try:
            json.loads(arguments)
        except ValueError:
            raise invalid(f"Invalid '{here}.function.arguments': not valid JSON.",
                          f"{here}.function.arguments") from None
        if call["id"] in ids:
            raise invalid(f"Duplicate value for '{here}.id': {call['id']}.", f"{here}.id")
        ids.append(call["id"])
    return ids


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("Invalid type for 'tools': expected an array.", "tools")
        for i, tool in enumerate(tools):
            here = f"tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise invalid(f"Invalid value: '{kind}'. Supported values are: 'function' and 'custom'.",
                              f"{here}.type")
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not TOOL_NAME.match(name):
                raise invalid(
                    f"Invalid '{here}.function.name': string does not match pattern. Expected a string that matches "
                    "the pattern '^[a-zA-Z0-9_-]+$' and at most 64 characters.",
                    f"{here}.function.name",
                    "invalid_value",
                )
            parameters = function.get("parameters")
            if parameters is not None and (not isinstance(parameters, dict) or parameters.get("type") != "object"):
                got = parameters.get("type") if isinstance(parameters, dict) else type(parameters).__name__
                raise invalid(
                    f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: \"object\"', "
                    f"got 'type: \"{got}\"'.",
                    f"{here}.function.parameters",
                    "invalid_function_parameters",
                )
            names.add(name)
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            raise invalid("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                          "tool_choice")
        if isinstance(choice, dict):
            function = choice.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if choice.get("type") != "function" or name not in names:
                raise invalid(f"Invalid value for 'tool_choice': no function named '{name}' in 'tools'.", "tool_choice")
        elif choice not in ("none", "auto", "required"):
            raise invalid(f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                          "tool_choice")
    if "parallel_tool_calls" in body and not tools:
        raise invalid("Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' "
                      "are specified.", "parallel_tool_calls")


def _check_numbers(body: dict[str, Any], limits: Limits) -> None:
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise invalid("max_tokens and max_completion_tokens cannot both be set.", "max_tokens")
    for name in ("max_tokens", "max_completion_tokens"):
        if name not in body:
            continue
        value = body[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise invalid(f"Invalid '{name}': expected an integer greater than or equal to 1.", name)
        if limits.max_output is not None and value > limits.max_output:
            raise invalid(
                f"{name} is too large: {value}. This model supports at most {limits.max_output} completion tokens, "
                f"whereas you provided {value}.",
                name,
                "invalid_value",
            )
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
        raise invalid("Invalid 'temperature': expected a number between 0 and 2.", "temperature")
    top_p = body.get("top_p")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 <= top_p <= 1):
        raise invalid("Invalid 'top_p': expected a number between 0 and 1.", "top_p")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise invalid("Invalid 'stop': expected a string or an array of at most 4 strings.", "stop")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid(f"Invalid value: '{effort}'. Supported values are: {', '.join(sorted(REASONING_EFFORTS))}.",
                      "reasoning_effort")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > limits.max_user_length):
        raise invalid(f"Invalid 'user': string too long. Expected a string with maximum length "
                      f"{limits.max_user_length}.", "user", "string_above_max_length")


def _find_key(value: Any, key: str, path: str) -> str | None:
    """The path of the first `key` anywhere in a JSON value, or None."""
    if isinstance(value, dict):
        for name, inner in value.items():
            here = f"{path}.{name}" if path else name
            if name == key:
                return here
            found = _find_key(inner, key, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found = _find_key(inner, key, f"{path}[{i}]")
            if found is not None:
                return found
    return None
