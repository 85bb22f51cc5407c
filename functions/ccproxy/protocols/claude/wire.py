"""What both halves of Anthropic Messages share: the wire models of a
client's request, the protocol's constants, the stop-reason and error-type
tables, and the small conversions (usage, signatures, server tool results)
that go both ways."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...unified import StopReason, Usage

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 8192
MIN_THINKING_BUDGET = 1024
# A Gemini thought signature handed to a Claude client rides in a thinking
# block's signature, marked so it is recognised when the client sends it back.
GEMINI_MARK = "gemini:"
# The beta under which the API takes {"role": "system"} turns inside messages.
SYSTEM_TURNS_BETA = "mid-conversation-system-2026-04-07"
MAX_CACHE_MARKS = 4
# The wire type of each server tool Anthropic runs, for a request that named
# the tool in another protocol.
SERVER_TOOL_TYPES = {
    "web_search": "web_search_20250305",
    "web_fetch": "web_fetch_20250910",
    "code_execution": "code_execution_20250825",
}
# The betas those tools need where they are not generally available.
TOOL_BETAS = {"web_fetch": "web-fetch-2025-09-10"}
# A versioned tool type (web_search_20250305, bash_20250124...): its kind and date.
DATED_TOOL = re.compile(r"(.+)_(\d{8})\Z")

# ---------------------------------------------------------------- wire models (client requests)

# The models keep their leading underscores: pydantic names the class in its
# validation messages, which clients see.


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class _MessageIn(_Wire):
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class _MessagesRequest(_Wire):
    model: str
    max_tokens: int = Field(ge=1)
    messages: list[_MessageIn]
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = None
    top_k: int | None = None
    stream: bool | None = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


class _CountRequest(_MessagesRequest):
    max_tokens: int | None = None  # type: ignore[assignment]


# ---------------------------------------------------------------- mappings

STOP_FROM_WIRE: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
    "model_context_window_exceeded": "context_window",
}
STOP_TO_WIRE = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
    "context_window": "model_context_window_exceeded",
    "other": "end_turn",
}
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "unavailable": "overloaded_error",
    "timeout": "timeout_error",
    "internal": "api_error",
}
KIND_BY_TYPE = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
    "api_error": "internal",
}


# ---------------------------------------------------------------- conversions both ways


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic's input_tokens excludes cached tokens (cache reads and writes
    are counted apart), where the unified input_tokens is the whole prompt."""
    cache_read = usage.cache_read_tokens or 0
    cache_write = usage.cache_write_tokens or 0
    return {
        "input_tokens": max((usage.input_tokens or 0) - cache_read - cache_write, 0),
        "output_tokens": usage.output_tokens or 0,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def usage_from(raw: dict[str, Any]) -> Usage:
    cache_read = raw.get("cache_read_input_tokens") or 0
    cache_write = raw.get("cache_creation_input_tokens") or 0
    input_tokens = raw.get("input_tokens")
    return Usage(
        input_tokens=None if input_tokens is None else input_tokens + cache_read + cache_write,
        output_tokens=raw.get("output_tokens"),
        cache_read_tokens=raw.get("cache_read_input_tokens"),
        cache_write_tokens=raw.get("cache_creation_input_tokens"),
    )


def signature_out(signature: str | None, origin: str | None) -> str:
    """A thinking signature as a Claude client gets it: another vendor's
    marked (GEMINI_MARK) so that it is known again when it comes back."""
    if not signature:
        return ""
    return GEMINI_MARK + signature if origin == "gemini" else signature


def search_results(block: dict[str, Any]) -> str:
    """A server tool's result block in words: each result's title and URL,
    or the error the tool met."""
    content = block.get("content")
    if isinstance(content, dict):
        return f"error: {content.get('error_code', 'unknown')}"
    lines = []
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict):
            lines.append(" - ".join(str(item[k]) for k in ("title", "url") if item.get(k)) or str(item.get("text", "")))
    return "\n".join(lines)
