"""What both halves of the Gemini codec read and write the same way: key
spelling, thought-signature sentinels, finish reasons, status names, usage,
server tools and Google Search grounding."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ...ids import new_call_id
from ...unified import SearchResult, ServerToolUse, StopReason, Usage

# History the model did not sign itself (another vendor's turn, or a client
# that has nowhere to keep signatures) carries Google's documented sentinel.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_SENTINELS = frozenset({SKIP_SIGNATURE, "context_engineering_is_the_way_to_go"})

# ---------------------------------------------------------------- key spelling

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@lru_cache(maxsize=128)
def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field under its lowerCamelCase or snake_case name: Google's parser
    takes both and the official SDK sends a mixture."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(_snake(name), default)


# ---------------------------------------------------------------- mappings

_BLOCKED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_STOP_TO_WIRE = {
    "end_turn": "STOP",
    "stop_sequence": "STOP",
    "tool_use": "STOP",
    "pause_turn": "STOP",
    "max_tokens": "MAX_TOKENS",
    "context_window": "MAX_TOKENS",
    "refusal": "SAFETY",
    "other": "OTHER",
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",
}
_LEVELS = {"minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH", "max": "HIGH"}


def _stop_from_wire(reason: str | None, called: bool) -> StopReason:
    if reason in (None, "STOP"):
        return "tool_use" if called else "end_turn"
    if reason == "MAX_TOKENS":
        return "max_tokens"
    if reason in _BLOCKED:
        return "refusal"
    return "tool_use" if called else "end_turn"


def _usage_json(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens or 0
    output = usage.output_tokens or 0
    thoughts = usage.reasoning_tokens or 0
    body = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": max(output - thoughts, 0),
        "totalTokenCount": prompt + output,
    }
    if thoughts:
        body["thoughtsTokenCount"] = thoughts
    if usage.cache_read_tokens:
        body["cachedContentTokenCount"] = usage.cache_read_tokens
    return body


def _usage_from(meta: Any) -> Usage:
    if not isinstance(meta, dict):
        return Usage()
    prompt = _get(meta, "promptTokenCount")
    tool_prompt = _get(meta, "toolUsePromptTokenCount") or 0
    candidates = _get(meta, "candidatesTokenCount")
    thoughts = _get(meta, "thoughtsTokenCount")
    output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=None if prompt is None else prompt + tool_prompt,
        output_tokens=output,
        cache_read_tokens=_get(meta, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


_STANDARD_BASE64 = str.maketrans("-_", "+/")

# Gemini's own tools, by the kind of server tool each is.
_SERVER_TOOLS = {"googleSearch": "web_search", "urlContext": "web_fetch", "codeExecution": "code_execution"}
_SERVER_TOOL_KEYS = {kind: key for key, kind in _SERVER_TOOLS.items()}


# ---------------------------------------------------------------- grounding


def _grounding(candidate: Any) -> ServerToolUse | None:
    """The Google Search a grounded answer ran: its queries and sources."""
    meta = _get(candidate, "groundingMetadata") if isinstance(candidate, dict) else None
    if not isinstance(meta, dict):
        return None
    queries = [q for q in _get(meta, "webSearchQueries") or [] if isinstance(q, str)]
    results = []
    for chunk in _get(meta, "groundingChunks") or []:
        web = chunk.get("web") if isinstance(chunk, dict) else None
        if isinstance(web, dict) and isinstance(web.get("uri"), str):
            results.append(
                SearchResult(url=web["uri"], title=web.get("title") if isinstance(web.get("title"), str) else None)
            )
    if not queries and not results:
        return None
    return ServerToolUse(
        id=new_call_id("srvtoolu_"), name="web_search", input={"query": "; ".join(queries)}, results=results
    )


def _grounding_json(use: ServerToolUse) -> dict[str, Any]:
    query = use.input.get("query")
    return {
        "webSearchQueries": [query] if isinstance(query, str) and query else [],
        "groundingChunks": [{"web": {"uri": r.url, "title": r.title or r.url}} for r in use.results],
    }
