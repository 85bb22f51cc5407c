"""What both halves of OpenAI chat completions share: the wire models of a
client's request, the finish-reason and error-type tables, and the small
conversions (usage, tool-call arguments) that go both ways."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...errors import ProxyError
from ...ids import for_openai
from ...jsonutil import dumps, loads_object
from ...unified import StopReason, ToolCall, Usage
from ..common import retry_after, upstream_error_body

# ---------------------------------------------------------------- wire models (client requests)

# The models keep their leading underscores: pydantic names the class in its
# validation messages ("... instance of _MessageIn"), which clients see.


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Function(_Wire):
    name: str
    arguments: str | dict[str, Any] | None = None


class _CallIn(_Wire):
    id: str
    type: str = "function"
    function: _Function


class _MessageIn(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[_CallIn] | None = None
    tool_call_id: str | None = None
    function_call: _Function | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _StreamOptions(_Wire):
    include_usage: bool | None = None


class _ChatRequest(_Wire):
    model: str
    messages: list[_MessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    thinking: dict[str, Any] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class _EmbedRequest(_Wire):
    model: str
    input: str | list[str]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] | None = None


# ---------------------------------------------------------------- mappings

FINISH_TO_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "context_window": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "other": "stop",
}
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "server_error",
    "unavailable": "server_error",
    "timeout": "timeout_error",
    "internal": "server_error",
}
KIND_BY_TYPE = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limit",
    "insufficient_quota": "rate_limit",
    "server_error": "internal",
    "timeout_error": "timeout",
}


def finish_reason(stop: StopReason) -> str:
    return STOP_TO_FINISH.get(stop, "stop")


# ---------------------------------------------------------------- conversions both ways


def usage_json(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    body: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if usage.cache_read_tokens is not None:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    if usage.reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


def usage_from(body: Any) -> Usage:
    if not isinstance(body, dict):
        return Usage()
    cached = (body.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (body.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return Usage(
        input_tokens=body.get("prompt_tokens"),
        output_tokens=body.get("completion_tokens"),
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def call_arguments(value: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return loads_object(value or "")


def wire_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls as an assistant message carries them, in an answer or in history."""
    return [
        {"id": for_openai(c.id), "type": "function", "function": {"name": c.name, "arguments": dumps(c.arguments)}}
        for c in calls
    ]


# ---------------------------------------------------------------- shared with the Responses API
# The Responses API answers errors and lists models as chat completions do.


def error_body(error: ProxyError) -> dict[str, Any]:
    """The OpenAI error shape, the HTTP status being the error's own."""
    return {
        "error": {
            "message": error.message,
            "type": ERROR_TYPES.get(error.kind, "server_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def read_error(status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
    """An OpenAI-shaped upstream error (`{"error": {...}}`, a bare object or
    a string) as a ProxyError keeping `status`."""
    parsed, message = upstream_error_body(body, status)
    code = param = None
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        code = error.get("code") if isinstance(error.get("code"), str) else None
        param = error.get("param") if isinstance(error.get("param"), str) else None
    elif isinstance(error, str):
        message = error
    return ProxyError(status, message, code=code, param=param, retry_after=retry_after(headers))


def model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "ccproxy"}


def model_list(names: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(name) for name in names]}
