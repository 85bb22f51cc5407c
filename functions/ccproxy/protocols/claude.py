"""Anthropic Messages, both as the client's protocol
and as an upstream's."""

from __future__ import annotations

import enum
import json
import logging
import re
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ProxyError, status_for_kind
from ..framing import SSEDecoder, SSEEvent, parse_json_data
from ..ids import for_anthropic, new_call_id
from ..jsonutil import dumpb, dumps, loads_object
from ..unified import (
    CacheMark,
    Document,
    Finish,
    Image,
    Message,
    Reasoning,
    RedactedThinking,
    Request,
    Response,
    ResponseFormat,
    SearchResult,
    ServerTool,
    ServerToolRun,
    ServerToolUse,
    Start,
    StopReason,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ThinkingSignature,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageUpdate,
)
from .base import ClientContext, Codec, RecordDecoder, Route, StreamDecoder, StreamEncoder
from .common import (
    cache_mark,
    effort_to_budget,
    fold_system_turns,
    name_tool_results,
    retry_after,
    server_tool_text,
    upstream_error_body,
    validate,
)

log = logging.getLogger("ccproxy")

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
_SERVER_TOOL_TYPES = {
    "web_search": "web_search_20250305",
    "web_fetch": "web_fetch_20250910",
    "code_execution": "code_execution_20250825",
}
_DATED_TOOL = re.compile(r"(.+)_(\d{8})\Z")

# ---------------------------------------------------------------- wire models


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

_STOP_FROM_WIRE: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
    "model_context_window_exceeded": "context_window",
}
_STOP_TO_WIRE = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
    "context_window": "model_context_window_exceeded",
    "other": "end_turn",
}
_ERROR_TYPES = {
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
_KIND_BY_TYPE = {
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


def _usage_json(usage: Usage) -> dict[str, Any]:
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


def _usage_from(raw: dict[str, Any]) -> Usage:
    cache_read = raw.get("cache_read_input_tokens") or 0
    cache_write = raw.get("cache_creation_input_tokens") or 0
    input_tokens = raw.get("input_tokens")
    return Usage(
        input_tokens=None if input_tokens is None else input_tokens + cache_read + cache_write,
        output_tokens=raw.get("output_tokens"),
        cache_read_tokens=raw.get("cache_read_input_tokens"),
        cache_write_tokens=raw.get("cache_creation_input_tokens"),
    )


def _signature_out(signature: str | None, origin: str | None) -> str:
    if not signature:
        return ""
    return GEMINI_MARK + signature if origin == "gemini" else signature


# ---------------------------------------------------------------- client request decoding


def _system(system: str | list[dict[str, Any]] | None) -> tuple[str | None, CacheMark | None]:
    """The system prompt's text, and the cache breakpoint its last marked
    block set (Anthropic caches the prompt up to there)."""
    if system is None:
        return None, None
    if isinstance(system, str):
        return system or None, None
    texts = [b for b in system if isinstance(b, dict) and b.get("type") == "text"]
    marked = [b["cache_control"] for b in texts if isinstance(b.get("cache_control"), dict)]
    return "\n\n".join(str(b.get("text", "")) for b in texts) or None, (marked[-1] if marked else None)


def _source(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise ProxyError(400, f"{where}.source: give the {block.get('type')}'s source object", param=f"{where}.source")
    return source


def _image(block: dict[str, Any], where: str) -> Image:
    source = _source(block, where)
    if source.get("type") == "base64":
        return Image(media_type=source.get("media_type"), data=source.get("data"), cache=cache_mark(block))
    if source.get("type") == "url":
        return Image(url=source.get("url"), cache=cache_mark(block))
    raise ProxyError(400, f"{where}.source.type: give base64 or url", param=f"{where}.source")


def _document(block: dict[str, Any], where: str) -> Document:
    source = _source(block, where)
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    cache = cache_mark(block)
    if kind == "base64":
        return Document(
            media_type=str(source.get("media_type") or "application/pdf"),
            data=str(source.get("data") or ""),
            title=title,
            cache=cache,
        )
    if kind == "url":
        return Document(url=str(source.get("url") or ""), title=title, cache=cache)
    if kind == "text":
        return Document(media_type="text/plain", text=str(source.get("data") or ""), title=title, cache=cache)
    if kind == "content":
        inner = source.get("content")
        text = (
            inner
            if isinstance(inner, str)
            else "\n".join(
                str(b.get("text", "")) for b in inner or [] if isinstance(b, dict) and b.get("type") == "text"
            )
        )
        return Document(media_type="text/plain", text=text, title=title, cache=cache)
    raise ProxyError(400, f"{where}.source.type: give base64, url, text or content", param=f"{where}.source.type")


def _search_results(block: dict[str, Any]) -> str:
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


def _blocks(content: str | list[dict[str, Any]], role: str, where: str) -> list[Any]:
    if isinstance(content, str):
        return [Text(text=content)]
    parts: list[Any] = []
    pending_signature: str | None = None
    server_uses: dict[str, ServerToolUse] = {}
    for i, block in enumerate(content):
        here = f"{where}.content.{i}"
        if not isinstance(block, dict):
            raise ProxyError(400, f"{here}: a content block must be an object", param=here)
        kind = block.get("type")
        if role == "system" and kind != "text":
            raise ProxyError(400, f"{here}.type: a system turn holds text blocks only", param=here)
        if kind == "text":
            parts.append(Text(text=str(block.get("text", "")), cache=cache_mark(block)))
        elif kind == "image":
            parts.append(_image(block, here))
        elif kind == "document":
            parts.append(_document(block, here))
        elif kind == "tool_use" and role == "assistant":
            call = ToolCall(id=block["id"], name=block["name"], arguments=block.get("input") or {})
            if pending_signature is not None:
                call.signature, call.origin, pending_signature = pending_signature, "gemini", None
            parts.append(call)
        elif kind == "tool_result" and role == "user":
            inner = block.get("content")
            result_parts = [] if inner is None else _blocks(inner, "user", here)
            parts.append(
                ToolResult(
                    id=block["tool_use_id"],
                    content=[p for p in result_parts if isinstance(p, (Text, Image, Document))],
                    is_error=bool(block.get("is_error")),
                    cache=cache_mark(block),
                )
            )
        elif kind == "thinking":
            signature = block.get("signature") or None
            if signature and signature.startswith(GEMINI_MARK):
                if not block.get("thinking"):
                    pending_signature = signature[len(GEMINI_MARK) :]
                    continue
                parts.append(
                    Thinking(text=block.get("thinking", ""), signature=signature[len(GEMINI_MARK) :], origin="gemini")
                )
            else:
                parts.append(
                    Thinking(
                        text=block.get("thinking", ""), signature=signature, origin="claude" if signature else None
                    )
                )
        elif kind == "redacted_thinking":
            parts.append(Thinking(signature=block.get("data"), redacted=True, origin="claude"))
        elif kind == "server_tool_use" and role == "assistant":
            use = ServerToolUse(
                id=str(block.get("id", "")), name=str(block.get("name", "")), input=block.get("input") or {}
            )
            server_uses[use.id] = use
            parts.append(use)
        elif isinstance(kind, str) and kind.endswith("_tool_result") and role == "assistant":
            answered = server_uses.get(str(block.get("tool_use_id")))
            if answered is not None:
                answered.result = _search_results(block)
        elif kind in ("search_result", "container_upload"):
            raise ProxyError(
                400, f"{here}: content blocks of type {kind!r} cannot be converted for this model", param=here
            )
        else:
            raise ProxyError(400, f"{here}.type: {kind!r} is not a content block this proxy understands", param=here)
    if pending_signature is not None:
        parts.append(Thinking(signature=pending_signature, origin="gemini"))
    return parts


def _decode_tools(tools: list[dict[str, Any]] | None) -> tuple[list[Tool], list[ServerTool]]:
    out, server = [], []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise ProxyError(400, f"tools.{i}: a tool must be an object", param=f"tools.{i}")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            # Versioned tools (web_search_20250305, bash_20250124...) that
            # Anthropic runs or defines itself: each upstream takes the ones it
            # has an equivalent of and leaves the rest out.
            dated = _DATED_TOOL.match(str(kind))
            options = {k: v for k, v in tool.items() if k not in ("type", "name", "cache_control")}
            server.append(
                ServerTool(
                    kind=dated.group(1) if dated else str(kind),
                    name=str(tool.get("name") or kind),
                    options=options,
                    wire=tool,
                )
            )
            continue
        if not isinstance(tool.get("name"), str):
            raise ProxyError(400, f"tools.{i}.name: a tool needs a name", param=f"tools.{i}.name")
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise ProxyError(400, f"tools.{i}.input_schema: give a JSON Schema object", param=f"tools.{i}.input_schema")
        out.append(
            Tool(
                name=tool["name"],
                description=tool.get("description"),
                parameters=schema or {"type": "object", "properties": {}},
                cache=cache_mark(tool),
            )
        )
    return out, server


def _decode_tool_choice(choice: dict[str, Any] | None) -> tuple[ToolChoice | None, bool | None]:
    if not choice:
        return None, None
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise ProxyError(
            400, f"tool_choice.type: {kind!r} is not one of auto, any, tool, none", param="tool_choice.type"
        )
    parallel = False if choice.get("disable_parallel_tool_use") else None
    return ToolChoice(mode=kind, name=choice.get("name")), parallel


def _decode_reasoning(thinking: dict[str, Any] | None, output_config: dict[str, Any] | None) -> Reasoning | None:
    effort = (output_config or {}).get("effort")
    if not thinking:
        return Reasoning(enabled=True, effort=effort) if effort else None
    kind = thinking.get("type")
    if kind == "enabled":
        return Reasoning(
            enabled=True,
            budget_tokens=thinking.get("budget_tokens"),
            effort=effort,
            include_thoughts=thinking.get("display") != "omitted",
        )
    if kind == "adaptive":
        return Reasoning(enabled=True, effort=effort)
    return Reasoning(enabled=False)


def _betas(ctx: ClientContext) -> list[str]:
    value = ctx.headers.get("anthropic-beta") or ""
    return [beta.strip() for beta in value.split(",") if beta.strip()]


def _decode(wire: _MessagesRequest, stream: bool, betas: list[str]) -> Request:
    messages: list[Message] = []
    for i, message in enumerate(wire.messages):
        parts = _blocks(message.content, message.role, f"messages.{i}")
        if messages and messages[-1].role == message.role:
            messages[-1].content.extend(parts)
        else:
            messages.append(Message(role=message.role, content=parts))
    name_tool_results(messages)
    tool_choice, parallel = _decode_tool_choice(wire.tool_choice)
    fmt = (wire.output_config or {}).get("format")
    system, system_cache = _system(wire.system)
    tools, server_tools = _decode_tools(wire.tools)
    return Request(
        model=wire.model,
        system=system,
        system_cache=system_cache,
        messages=messages,
        tools=tools,
        server_tools=server_tools,
        betas=betas,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        top_k=wire.top_k,
        stop=list(wire.stop_sequences or []),
        response_format=ResponseFormat(type="json_schema", schema=fmt.get("schema")) if isinstance(fmt, dict) else None,
        reasoning=_decode_reasoning(wire.thinking, wire.output_config),
        stream=stream,
    )


# ---------------------------------------------------------------- client stream encoder


class _Block(enum.Enum):
    NONE = "none"
    TEXT = "text"
    THINKING = "thinking"
    TOOL = "tool_use"
    SERVER = "server_tool"


class _EncoderState(enum.Enum):
    FRESH = "fresh"  # message_start not sent
    STREAMING = "streaming"  # inside the message
    ERRORED = "errored"  # an error event ended it


class _EventEncoder(StreamEncoder):
    """Unified events as Anthropic SSE: blocks numbered
    from 0, each closed before the next opens, usage in message_delta."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.state = _EncoderState.FRESH
        self.block = _Block.NONE
        self.next_index = 0
        self.tool_blocks: dict[int, int] = {}  # unified call index -> block index
        self.stop: StopReason | None = None
        self.stop_sequence: str | None = None
        self.usage = Usage()
        self.id: str | None = None
        # A signature that came without thinking after the answer began
        # (Gemini signs its closing empty text part): sent only before a tool
        # call. A trailing empty thinking block would be taken by clients for
        # the turn's last message (Claude Code then prints nothing).
        self.held_signature: str | None = None

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + dumpb(data) + b"\n\n"

    def _start(self) -> bytes:
        if self.state is not _EncoderState.FRESH:
            return b""
        self.state = _EncoderState.STREAMING
        message: dict[str, Any] = {
            "id": self.id if self.id and self.id.startswith("msg_") else "msg_" + new_call_id(""),
            "type": "message",
            "role": "assistant",
            "model": self.request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage_json(self.usage),
        }
        return self._event("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self.block is _Block.NONE:
            return b""
        self.block = _Block.NONE
        return self._event("content_block_stop", {"type": "content_block_stop", "index": self.next_index - 1})

    def _open_block(self, kind: _Block, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.block = kind
        index = self.next_index
        self.next_index += 1
        return out + self._event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        at = self.next_index - 1 if index is None else index
        return self._event("content_block_delta", {"type": "content_block_delta", "index": at, "delta": delta})

    def _signature_block(self, signature: str) -> bytes:
        return (
            self._open_block(_Block.THINKING, {"type": "thinking", "thinking": "", "signature": ""})
            + self._delta({"type": "signature_delta", "signature": signature})
            + self._close_block()
        )

    def feed(self, event: StreamEvent) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        if isinstance(event, Start):
            self.id = event.id
            return self._start()
        if isinstance(event, StreamError):
            self.state = _EncoderState.ERRORED
            return self._event("error", _error_body(event.error))
        out = self._start()
        match event:
            case TextDelta(text=text):
                if not text:
                    return out
                if self.block is not _Block.TEXT:
                    out += self._open_block(_Block.TEXT, {"type": "text", "text": ""})
                return out + self._delta({"type": "text_delta", "text": text})
            case ThinkingDelta(text=text):
                if not text:
                    return out
                if self.block is not _Block.THINKING:
                    out += self._open_block(_Block.THINKING, {"type": "thinking", "thinking": "", "signature": ""})
                return out + self._delta({"type": "thinking_delta", "thinking": text})
            case ThinkingSignature(signature=signature, origin=origin):
                if self.block is not _Block.THINKING and self.next_index > 0:
                    self.held_signature = _signature_out(signature, origin)
                    return out
                if self.block is not _Block.THINKING:
                    return out + self._signature_block(_signature_out(signature, origin))
                return (
                    out
                    + self._delta({"type": "signature_delta", "signature": _signature_out(signature, origin)})
                    + self._close_block()
                )
            case RedactedThinking(data=data):
                return (
                    out
                    + self._open_block(_Block.THINKING, {"type": "redacted_thinking", "data": data})
                    + self._close_block()
                )
            case ToolCallStart(index=index, id=call_id, name=name, signature=signature, origin=origin):
                held, self.held_signature = self.held_signature, None
                if signature or held:
                    out += self._signature_block(_signature_out(signature, origin) if signature else held or "")
                out += self._open_block(
                    _Block.TOOL, {"type": "tool_use", "id": for_anthropic(call_id), "name": name, "input": {}}
                )
                self.tool_blocks[index] = self.next_index - 1
                return out
            case ToolCallDelta(index=index, arguments=arguments):
                if index not in self.tool_blocks or not arguments:
                    return out
                return out + self._delta(
                    {"type": "input_json_delta", "partial_json": arguments}, self.tool_blocks[index]
                )
            case ToolCallEnd(index=index):
                if self.block is _Block.TOOL and self.tool_blocks.get(index) == self.next_index - 1:
                    out += self._close_block()
                return out
            case ServerToolRun(use=use):
                use_block, result_block = _server_blocks(use)
                out += self._open_block(_Block.SERVER, {**use_block, "input": {}})
                out += self._delta({"type": "input_json_delta", "partial_json": dumps(use.input)})
                return out + self._open_block(_Block.SERVER, result_block) + self._close_block()
            case UsageUpdate(usage=usage):
                self.usage = self.usage.merged(usage)
                return out
            case Finish(stop_reason=stop, stop_sequence=sequence):
                self.stop, self.stop_sequence = stop, sequence
                return out
        return out

    def close(self) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        out = self._start() + self._close_block()
        stop = self.stop or "end_turn"
        if stop == "end_turn" and self.tool_blocks:
            stop = "tool_use"
        delta = {"stop_reason": _STOP_TO_WIRE.get(stop, "end_turn"), "stop_sequence": self.stop_sequence}
        out += self._event("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage_json(self.usage)})
        return out + self._event("message_stop", {"type": "message_stop"})


def _server_blocks(use: ServerToolUse) -> tuple[dict[str, Any], dict[str, Any]]:
    """A server tool's run as Anthropic shows it: the use, then its result."""
    use_id = use.id if use.id.startswith("srvtoolu_") else "srvtoolu_" + for_anthropic(use.id)
    results = [
        {
            "type": "web_search_result",
            "url": r.url,
            "title": r.title or r.url,
            "encrypted_content": "",
            "page_age": None,
        }
        for r in use.results
    ]
    return (
        {"type": "server_tool_use", "id": use_id, "name": use.name, "input": use.input},
        {"type": f"{use.name}_tool_result", "tool_use_id": use_id, "content": results},
    )


def _server_use(use_block: dict[str, Any], result_block: dict[str, Any] | None) -> ServerToolUse:
    """A server tool's use and result blocks from an Anthropic answer."""
    raw_input = use_block.get("input")
    use = ServerToolUse(
        id=str(use_block.get("id") or new_call_id("srvtoolu_")),
        name=str(use_block.get("name") or ""),
        input=raw_input if isinstance(raw_input, dict) else {},
    )
    if result_block is not None:
        use.result = _search_results(result_block)
        content = result_block.get("content")
        use.results = (
            [
                SearchResult(url=item["url"], title=item.get("title"))
                for item in content
                if isinstance(item, dict) and isinstance(item.get("url"), str)
            ]
            if isinstance(content, list)
            else []
        )
    return use


def _error_body(error: ProxyError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(error.kind, "api_error"), "message": error.message}}


# ---------------------------------------------------------------- upstream stream decoder


class _DecoderState(enum.Enum):
    WAITING = "waiting"  # before message_start
    STREAMING = "streaming"  # blocks arriving
    FINISHED = "finished"  # message_delta with stop_reason seen
    DONE = "done"  # message_stop or error


class _EventDecoder(RecordDecoder):
    def __init__(self) -> None:
        super().__init__(SSEDecoder())
        self.state = _DecoderState.WAITING
        self.blocks: dict[int, tuple[str, int]] = {}  # block index -> (type, call index)
        self.calls = 0
        self.raw_usage: dict[str, Any] = {}
        # Server tool uses by block index, their input JSON gathering, until
        # their result block arrives.
        self.server_uses: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def _ended(self) -> bool:
        return self.state not in (_DecoderState.WAITING, _DecoderState.STREAMING)

    def _usage(self, raw: dict[str, Any] | None) -> UsageUpdate:
        self.raw_usage.update({k: v for k, v in (raw or {}).items() if isinstance(v, int)})
        return UsageUpdate(_usage_from(self.raw_usage))

    def _record(self, record: SSEEvent, events: list[StreamEvent]) -> None:
        name, data = record.event, record.data
        if self.state is _DecoderState.DONE or not data:
            return
        body = parse_json_data(data)
        kind = (body.get("type") if isinstance(body, dict) else None) or name
        if kind == "message_start":
            message = body.get("message") or {}
            events.append(Start(id=message.get("id"), model=message.get("model")))
            events.append(self._usage(message.get("usage")))
            self.state = _DecoderState.STREAMING
        elif kind == "content_block_start":
            block = body.get("content_block") or {}
            index = body.get("index", len(self.blocks))
            block_type = block.get("type")
            if block_type == "tool_use":
                call = self.calls
                self.calls += 1
                self.blocks[index] = ("tool_use", call)
                events.append(
                    ToolCallStart(
                        call, block.get("id") or new_call_id("toolu_"), block.get("name", ""), origin="claude"
                    )
                )
                if block.get("input"):
                    events.append(ToolCallDelta(call, json.dumps(block["input"])))
            else:
                self.blocks[index] = (block_type or "", -1)
                if block_type == "server_tool_use":
                    self.server_uses[index] = (block, [])
                elif isinstance(block_type, str) and block_type.endswith("_tool_result"):
                    self._server_result(block, events)
                elif block_type == "redacted_thinking":
                    events.append(RedactedThinking(block.get("data", ""), origin="claude"))
                elif block_type == "text" and block.get("text"):
                    events.append(TextDelta(block["text"]))
                elif block_type == "thinking" and block.get("thinking"):
                    events.append(ThinkingDelta(block["thinking"]))
        elif kind == "content_block_delta":
            delta = body.get("delta") or {}
            block_type, call = self.blocks.get(body.get("index", -1), ("", -1))
            delta_type = delta.get("type")
            if delta_type == "text_delta" and delta.get("text"):
                events.append(TextDelta(delta["text"]))
            elif delta_type == "thinking_delta" and delta.get("thinking"):
                events.append(ThinkingDelta(delta["thinking"]))
            elif delta_type == "signature_delta":
                events.append(ThinkingSignature(delta.get("signature", ""), origin="claude"))
            elif delta_type == "input_json_delta" and call >= 0 and delta.get("partial_json"):
                events.append(ToolCallDelta(call, delta["partial_json"]))
            elif delta_type == "input_json_delta" and body.get("index") in self.server_uses:
                self.server_uses[body["index"]][1].append(str(delta.get("partial_json") or ""))
        elif kind == "content_block_stop":
            block_type, call = self.blocks.get(body.get("index", -1), ("", -1))
            if call >= 0:
                events.append(ToolCallEnd(call))
        elif kind == "message_delta":
            delta = body.get("delta") or {}
            events.append(self._usage(body.get("usage")))
            if delta.get("stop_reason"):
                events.append(Finish(_STOP_FROM_WIRE.get(delta["stop_reason"], "other"), delta.get("stop_sequence")))
                self.state = _DecoderState.FINISHED
        elif kind == "message_stop":
            if self.state is not _DecoderState.FINISHED:
                events.append(Finish("tool_use" if self.calls else "end_turn"))
            self.state = _DecoderState.DONE
        elif kind == "error":
            events.append(StreamError(_in_stream_error(body.get("error") if isinstance(body, dict) else None)))
            self.state = _DecoderState.DONE

    def _server_result(self, block: dict[str, Any], events: list[StreamEvent]) -> None:
        for index, (use, pieces) in list(self.server_uses.items()):
            if use.get("id") == block.get("tool_use_id"):
                del self.server_uses[index]
                streamed = loads_object("".join(pieces)) if pieces else use.get("input")
                events.append(ServerToolRun(_server_use({**use, "input": streamed}, block)))
                return


def _in_stream_error(error: Any) -> ProxyError:
    if not isinstance(error, dict):
        return ProxyError(502, "the upstream stream failed")
    kind = _KIND_BY_TYPE.get(str(error.get("type")), "internal")
    return ProxyError(status_for_kind(kind), str(error.get("message") or "upstream error"), kind=kind)  # type: ignore[arg-type]


# ---------------------------------------------------------------- upstream request encoding


def _genuine_thinking(message: Message) -> bool:
    first = message.content[0] if message.content else None
    return isinstance(first, Thinking) and first.origin == "claude" and bool(first.signature)


def _thinking_allowed(request: Request) -> bool:
    """Claude requires the last assistant turn that used tools to start with
    its own signed thinking; history from another vendor cannot, so thinking
    is turned off for such a request (the API refuses it otherwise)."""
    for message in reversed(request.messages):
        if message.role == "assistant":
            if any(isinstance(p, ToolCall) for p in message.content):
                return _genuine_thinking(message)
            return True
    return True


def _marked(block: dict[str, Any], cache: CacheMark | None) -> dict[str, Any]:
    if cache is not None:
        block["cache_control"] = cache
    return block


def _content(message: Message, keep_thinking: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, Text):
            if part.text:
                blocks.append(_marked({"type": "text", "text": part.text}, part.cache))
        elif isinstance(part, Image):
            blocks.append(_image_block(part))
        elif isinstance(part, Document):
            blocks.append(_document_block(part))
        elif isinstance(part, ToolCall):
            blocks.append(
                {"type": "tool_use", "id": for_anthropic(part.id), "name": part.name, "input": part.arguments}
            )
        elif isinstance(part, ToolResult):
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": for_anthropic(part.id)}
            inner = [_result_block(p) for p in part.content if not (isinstance(p, Text) and not p.text)]
            if inner:
                plain = all(b["type"] == "text" and "cache_control" not in b for b in inner)
                result["content"] = "".join(b["text"] for b in inner) if plain else inner
            if part.is_error:
                result["is_error"] = True
            blocks.append(_marked(result, part.cache))
        elif isinstance(part, ServerToolUse):
            # Another vendor's server ran it: what it did, in words.
            blocks.append({"type": "text", "text": server_tool_text(part)})
        elif isinstance(part, Thinking) and keep_thinking and part.origin == "claude" and part.signature:
            if part.redacted:
                blocks.append({"type": "redacted_thinking", "data": part.signature})
            else:
                blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    if message.role == "user":
        blocks.sort(key=lambda b: b["type"] != "tool_result")
    return blocks


def _result_block(part: Text | Image | Document) -> dict[str, Any]:
    if isinstance(part, Text):
        return _marked({"type": "text", "text": part.text}, part.cache)
    if isinstance(part, Image):
        return _image_block(part)
    return _document_block(part)


def _image_block(image: Image) -> dict[str, Any]:
    if image.data is not None:
        source = {"type": "base64", "media_type": image.media_type or "image/png", "data": image.data}
    else:
        source = {"type": "url", "url": image.url or ""}
    return _marked({"type": "image", "source": source}, image.cache)


def _document_block(document: Document) -> dict[str, Any]:
    if document.text is not None:
        source: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": document.text}
    elif document.data is not None:
        source = {"type": "base64", "media_type": document.media_type, "data": document.data}
    else:
        source = {"type": "url", "url": document.url or ""}
    block: dict[str, Any] = {"type": "document", "source": source}
    if document.title:
        block["title"] = document.title
    return _marked(block, document.cache)


def _messages(request: Request, keep_thinking: bool, system_turns: bool) -> list[dict[str, Any]]:
    """Turns as the API takes them: one role at a time, a user turn first;
    system turns stay in place only under the beta that allows them."""
    out: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            if system_turns:
                out.append(
                    {
                        "role": "system",
                        "content": [
                            _marked({"type": "text", "text": p.text}, p.cache)
                            for p in message.content
                            if isinstance(p, Text) and p.text
                        ],
                    }
                )
            continue
        blocks = _content(message, keep_thinking)
        if not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)
            if message.role == "user":
                out[-1]["content"].sort(key=lambda b: b["type"] != "tool_result")
        else:
            out.append({"role": message.role, "content": blocks})
    first = next((m for m in out if m["role"] != "system"), None)
    if first is not None and first["role"] != "user":
        out.insert(
            out.index(first), {"role": "user", "content": [{"type": "text", "text": "(conversation continues)"}]}
        )
    return out


def _limit_cache_marks(body: dict[str, Any], limit: int = MAX_CACHE_MARKS) -> None:
    """The API takes at most four cache breakpoints; a later one caches more,
    so the earliest ones beyond four are dropped."""
    marked: list[dict[str, Any]] = [t for t in body.get("tools", []) if "cache_control" in t]
    system = body.get("system")
    if isinstance(system, list):
        marked += [b for b in system if "cache_control" in b]
    for message in body["messages"]:
        for block in message["content"]:
            if "cache_control" in block:
                marked.append(block)
            inner = block.get("content")
            if isinstance(inner, list):
                marked += [b for b in inner if isinstance(b, dict) and "cache_control" in b]
    for block in marked[: max(len(marked) - limit, 0)]:
        del block["cache_control"]


def _tools_and_choice(request: Request, thinking: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    server = [_server_tool(t) for t in request.server_tools if t.wire or t.kind in _SERVER_TOOL_TYPES]
    if not request.tools and not server:
        return body
    body["tools"] = [
        _marked(
            {"name": t.name, "description": t.description or "", "input_schema": _object_schema(t.parameters)}, t.cache
        )
        for t in request.tools
    ] + server
    choice = request.tool_choice
    wire: dict[str, Any] | None = None
    if choice is not None:
        if choice.mode == "tool":
            wire = {"type": "tool", "name": choice.name}
        else:
            wire = {"type": choice.mode}
    if request.parallel_tool_calls is False and (wire is None or wire["type"] != "none"):
        wire = wire or {"type": "auto"}
        wire["disable_parallel_tool_use"] = True
    if wire is not None:
        body["tool_choice"] = wire
    return body


def _server_tool(tool: ServerTool) -> dict[str, Any]:
    if tool.wire:
        return tool.wire
    return {"type": _SERVER_TOOL_TYPES[tool.kind], "name": tool.kind, **tool.options}


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("type") == "object":
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("type", "properties")}
    return {"type": "object", "properties": schema.get("properties", {}), **rest}


# ---------------------------------------------------------------- the codec


class ClaudeCodec(Codec):
    protocol = "claude"
    path_roots = ("/v1/messages",)
    routes = (
        Route("POST", r"/v1/messages", "generate"),
        Route("POST", r"/v1/messages/count_tokens", "count_tokens"),
        Route("GET", r"/v1/models", "list_models", header="anthropic-version"),
        Route("GET", r"/v1/models/(?P<model>.+)", "get_model", header="anthropic-version"),
    )
    forwarded_headers = ("anthropic-beta",)
    takes_betas = True
    server_tools = frozenset(_SERVER_TOOL_TYPES)
    document_types = frozenset({"application/pdf", "text/plain"})
    document_urls = True

    # ------------------------------------------------------------ client side

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        wire = validate(_MessagesRequest, body)
        return _decode(wire, bool(wire.stream), _betas(ctx))

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        parts = response.content
        for i, part in enumerate(parts):
            if isinstance(part, Text):
                if part.text:
                    content.append({"type": "text", "text": part.text})
            elif isinstance(part, Thinking):
                trailing = (
                    content and not part.text and not isinstance(parts[i + 1] if i + 1 < len(parts) else None, ToolCall)
                )
                if trailing and not part.redacted:
                    continue  # as in streams: no empty thinking block after the answer began
                if part.redacted:
                    content.append({"type": "redacted_thinking", "data": part.signature or ""})
                else:
                    content.append(
                        {
                            "type": "thinking",
                            "thinking": part.text,
                            "signature": _signature_out(part.signature, part.origin),
                        }
                    )
            elif isinstance(part, ToolCall):
                if part.signature:
                    content.append(
                        {"type": "thinking", "thinking": "", "signature": _signature_out(part.signature, part.origin)}
                    )
                content.append(
                    {"type": "tool_use", "id": for_anthropic(part.id), "name": part.name, "input": part.arguments}
                )
            elif isinstance(part, ServerToolUse):
                content.extend(_server_blocks(part))
        stop = response.stop_reason
        if stop == "end_turn" and any(isinstance(p, ToolCall) for p in response.content):
            stop = "tool_use"
        response_id = response.id if response.id and response.id.startswith("msg_") else "msg_" + new_call_id("")
        return {
            "id": response_id,
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": _STOP_TO_WIRE.get(stop, "end_turn"),
            "stop_sequence": response.stop_sequence,
            "usage": _usage_json(response.usage),
        }

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return _EventEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return _error_body(error)

    # ------------------------------------------------------------ upstream side

    def upstream_path(self, model: str, stream: bool) -> str:
        return "/messages"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        system_turns = SYSTEM_TURNS_BETA in request.betas
        if not system_turns:
            request = fold_system_turns(request)
        reasoning = request.reasoning
        forced_tool = request.tool_choice is not None and request.tool_choice.mode in ("any", "tool")
        thinking = bool(reasoning and reasoning.enabled) and _thinking_allowed(request) and not forced_tool
        body: dict[str, Any] = {"model": model, "messages": _messages(request, thinking, system_turns)}
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        system = request.system
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_object":
            note = "Answer with one JSON object and nothing else."
            system = f"{system}\n\n{note}" if system else note
        if system:
            body["system"] = (
                [_marked({"type": "text", "text": system}, request.system_cache)] if request.system_cache else system
            )
        if thinking:
            assert reasoning is not None
            budget = max(reasoning.budget_tokens or effort_to_budget(reasoning.effort), MIN_THINKING_BUDGET)
            if budget >= max_tokens:
                if request.max_tokens and request.max_tokens > MIN_THINKING_BUDGET:
                    budget = request.max_tokens - 1
                else:
                    max_tokens = budget + DEFAULT_MAX_TOKENS
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        elif reasoning is not None and reasoning.enabled is False:
            body["thinking"] = {"type": "disabled"}
        body["max_tokens"] = max_tokens
        if request.temperature is not None and not thinking:
            body["temperature"] = min(max(request.temperature, 0.0), 1.0)
        if request.top_p is not None:
            body["top_p"] = max(request.top_p, 0.95) if thinking else request.top_p
        if request.top_k is not None and not thinking:
            body["top_k"] = request.top_k
        if request.stop:
            body["stop_sequences"] = request.stop
        body.update(_tools_and_choice(request, thinking))
        if fmt is not None and fmt.type == "json_schema" and fmt.schema_:
            body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema_}}
        if request.stream:
            body["stream"] = True
        _limit_cache_marks(body)
        return body

    def upstream_headers(self, request: Request) -> dict[str, str]:
        return {"anthropic-beta": ",".join(request.betas)} if request.betas else {}

    def left_out(self, request: Request) -> list[str]:
        # A tool in Anthropic's own wire form is sent as it came.
        return [
            f"server tool {t.name} ({t.kind})"
            for t in request.server_tools
            if not t.wire and t.kind not in self.server_tools
        ]

    def rename_model(self, answer: Any, model: str) -> None:
        if (
            isinstance(answer, dict)
            and answer.get("type") == "message_start"
            and isinstance(answer.get("message"), dict)
        ):
            answer["message"]["model"] = model
        else:
            super().rename_model(answer, model)

    def decode_response(self, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise ProxyError(502, "the upstream answer has no content")
        content: list[Any] = []
        results = {
            b.get("tool_use_id"): b
            for b in body["content"]
            if isinstance(b, dict) and str(b.get("type", "")).endswith("_tool_result")
        }
        for block in body["content"]:
            if not isinstance(block, dict):
                raise ProxyError(502, "the upstream answer holds a content block that is not an object")
            kind = block.get("type")
            if kind == "server_tool_use":
                content.append(_server_use(block, results.get(block.get("id"))))
            elif kind == "text":
                content.append(Text(text=block.get("text", "")))
            elif kind == "thinking":
                content.append(
                    Thinking(text=block.get("thinking", ""), signature=block.get("signature"), origin="claude")
                )
            elif kind == "redacted_thinking":
                content.append(Thinking(signature=block.get("data"), redacted=True, origin="claude"))
            elif kind == "tool_use":
                content.append(
                    ToolCall(
                        id=block.get("id") or new_call_id("toolu_"),
                        name=block.get("name", ""),
                        arguments=block.get("input") or {},
                        origin="claude",
                    )
                )
        return Response(
            id=body.get("id"),
            model=body.get("model"),
            content=content,
            stop_reason=_STOP_FROM_WIRE.get(body.get("stop_reason") or "end_turn", "other"),
            stop_sequence=body.get("stop_sequence"),
            usage=_usage_from(body.get("usage") or {}),
        )

    def stream_decoder(self) -> StreamDecoder:
        return _EventDecoder()

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        parsed, message = upstream_error_body(body, status)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        return ProxyError(status, message, retry_after=retry_after(headers))

    # ------------------------------------------------------------ models

    def encode_model_list(self, names: list[str]) -> dict[str, Any]:
        data = [self.encode_model(name) for name in names]
        return {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }

    def encode_model(self, name: str) -> dict[str, Any]:
        return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}

    # ------------------------------------------------------------ count tokens

    def decode_count_request(self, body: Any, ctx: ClientContext) -> Request:
        return _decode(validate(_CountRequest, body), False, _betas(ctx))

    def encode_count_response(self, tokens: int) -> dict[str, Any]:
        return {"input_tokens": tokens}

    def count_path(self, model: str) -> str | None:
        return "/messages/count_tokens"

    def encode_count_request(self, request: Request, model: str) -> dict[str, Any]:
        body = self.encode_request(request.model_copy(update={"stream": False}), model)
        return {
            k: v for k, v in body.items() if k in ("model", "messages", "system", "tools", "tool_choice", "thinking")
        }

    def decode_count_response(self, body: Any) -> int:
        return int(body.get("input_tokens", 0))
