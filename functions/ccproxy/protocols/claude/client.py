"""Anthropic Messages as clients speak it: the messages, count-tokens and
model routes, a client's request decoded into the unified form, and unified
answers, streams and errors encoded as Anthropic messages and SSE events."""

from __future__ import annotations

import enum
from typing import Any

from ...errors import ProxyError
from ...ids import for_anthropic, new_call_id
from ...jsonutil import dumpb, dumps
from ...unified import (
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
from ..base import ClientCodec, ClientContext, Route, StreamEncoder
from ..common import cache_mark, name_tool_results, validate
from .wire import (
    DATED_TOOL,
    ERROR_TYPES,
    GEMINI_MARK,
    STOP_TO_WIRE,
    _CountRequest,
    _MessagesRequest,
    search_results,
    signature_out,
    usage_json,
)

# ---------------------------------------------------------------- content blocks


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


def _tool_result(block: dict[str, Any], where: str) -> ToolResult:
    inner = block.get("content")
    result_parts = [] if inner is None else _blocks(inner, "user", where)
    return ToolResult(
        id=block["tool_use_id"],
        content=[p for p in result_parts if isinstance(p, (Text, Image, Document))],
        is_error=bool(block.get("is_error")),
        cache=cache_mark(block),
    )


class _BlockReader:
    """One turn's content blocks, read in order. A Gemini signature handed
    back in an empty thinking block waits for the tool call it signs (or
    stands alone at the end); a server tool's result block is read into the
    use it answers."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.parts: list[Any] = []
        self.pending_signature: str | None = None
        self.server_uses: dict[str, ServerToolUse] = {}

    def read(self, block: Any, here: str) -> None:
        if not isinstance(block, dict):
            raise ProxyError(400, f"{here}: a content block must be an object", param=here)
        kind = block.get("type")
        role = self.role
        if role == "system" and kind != "text":
            raise ProxyError(400, f"{here}.type: a system turn holds text blocks only", param=here)
        if kind == "text":
            self.parts.append(Text(text=str(block.get("text", "")), cache=cache_mark(block)))
        elif kind == "image":
            self.parts.append(_image(block, here))
        elif kind == "document":
            self.parts.append(_document(block, here))
        elif kind == "tool_use" and role == "assistant":
            self._tool_use(block)
        elif kind == "tool_result" and role == "user":
            self.parts.append(_tool_result(block, here))
        elif kind == "thinking":
            self._thinking(block)
        elif kind == "redacted_thinking":
            self.parts.append(Thinking(signature=block.get("data"), redacted=True, origin="claude"))
        elif kind == "server_tool_use" and role == "assistant":
            self._server_use(block)
        elif isinstance(kind, str) and kind.endswith("_tool_result") and role == "assistant":
            answered = self.server_uses.get(str(block.get("tool_use_id")))
            if answered is not None:
                answered.result = search_results(block)
        elif kind in ("search_result", "container_upload"):
            raise ProxyError(
                400, f"{here}: content blocks of type {kind!r} cannot be converted for this model", param=here
            )
        else:
            raise ProxyError(400, f"{here}.type: {kind!r} is not a content block this proxy understands", param=here)

    def finish(self) -> list[Any]:
        if self.pending_signature is not None:
            self.parts.append(Thinking(signature=self.pending_signature, origin="gemini"))
        return self.parts

    def _tool_use(self, block: dict[str, Any]) -> None:
        call = ToolCall(id=block["id"], name=block["name"], arguments=block.get("input") or {})
        if self.pending_signature is not None:
            call.signature, call.origin, self.pending_signature = self.pending_signature, "gemini", None
        self.parts.append(call)

    def _thinking(self, block: dict[str, Any]) -> None:
        signature = block.get("signature") or None
        text = block.get("thinking", "")
        if signature and signature.startswith(GEMINI_MARK):
            signature = signature[len(GEMINI_MARK) :]
            if not text:
                self.pending_signature = signature
            else:
                self.parts.append(Thinking(text=text, signature=signature, origin="gemini"))
        else:
            self.parts.append(Thinking(text=text, signature=signature, origin="claude" if signature else None))

    def _server_use(self, block: dict[str, Any]) -> None:
        use = ServerToolUse(
            id=str(block.get("id", "")), name=str(block.get("name", "")), input=block.get("input") or {}
        )
        self.server_uses[use.id] = use
        self.parts.append(use)


def _blocks(content: str | list[dict[str, Any]], role: str, where: str) -> list[Any]:
    if isinstance(content, str):
        return [Text(text=content)]
    reader = _BlockReader(role)
    for i, block in enumerate(content):
        reader.read(block, f"{where}.content.{i}")
    return reader.finish()


# ---------------------------------------------------------------- tools and options


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
            dated = DATED_TOOL.match(str(kind))
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


# ---------------------------------------------------------------- request decoding


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


# ---------------------------------------------------------------- answers


def _message_id(response_id: str | None) -> str:
    return response_id if response_id and response_id.startswith("msg_") else "msg_" + new_call_id("")


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


def _answer_blocks(parts: list[Any]) -> list[dict[str, Any]]:
    """A whole answer's content as Anthropic blocks."""
    content: list[dict[str, Any]] = []
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
                    {"type": "thinking", "thinking": part.text, "signature": signature_out(part.signature, part.origin)}
                )
        elif isinstance(part, ToolCall):
            if part.signature:
                content.append(
                    {"type": "thinking", "thinking": "", "signature": signature_out(part.signature, part.origin)}
                )
            content.append(
                {"type": "tool_use", "id": for_anthropic(part.id), "name": part.name, "input": part.arguments}
            )
        elif isinstance(part, ServerToolUse):
            content.extend(_server_blocks(part))
    return content


def _error_body(error: ProxyError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(error.kind, "api_error"), "message": error.message}}


# ---------------------------------------------------------------- stream encoder


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

    # ------------------------------------------------------------ framing

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + dumpb(data) + b"\n\n"

    def _start(self) -> bytes:
        if self.state is not _EncoderState.FRESH:
            return b""
        self.state = _EncoderState.STREAMING
        message: dict[str, Any] = {
            "id": _message_id(self.id),
            "type": "message",
            "role": "assistant",
            "model": self.request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_json(self.usage),
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

    # ------------------------------------------------------------ events

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
                return out + self._text(text)
            case ThinkingDelta(text=text):
                return out + self._thinking(text)
            case ThinkingSignature(signature=signature, origin=origin):
                return out + self._signature(signature_out(signature, origin))
            case RedactedThinking(data=data):
                return (
                    out
                    + self._open_block(_Block.THINKING, {"type": "redacted_thinking", "data": data})
                    + self._close_block()
                )
            case ToolCallStart():
                return out + self._tool_start(event)
            case ToolCallDelta(index=index, arguments=arguments):
                return out + self._tool_delta(index, arguments)
            case ToolCallEnd(index=index):
                return out + self._tool_end(index)
            case ServerToolRun(use=use):
                return out + self._server_run(use)
            case UsageUpdate(usage=usage):
                self.usage = self.usage.merged(usage)
            case Finish(stop_reason=stop, stop_sequence=sequence):
                self.stop, self.stop_sequence = stop, sequence
        return out

    def _text(self, text: str) -> bytes:
        if not text:
            return b""
        out = b""
        if self.block is not _Block.TEXT:
            out += self._open_block(_Block.TEXT, {"type": "text", "text": ""})
        return out + self._delta({"type": "text_delta", "text": text})

    def _thinking(self, text: str) -> bytes:
        if not text:
            return b""
        out = b""
        if self.block is not _Block.THINKING:
            out += self._open_block(_Block.THINKING, {"type": "thinking", "thinking": "", "signature": ""})
        return out + self._delta({"type": "thinking_delta", "thinking": text})

    def _signature(self, signature: str) -> bytes:
        """A signature closes the thinking block it signs; one with no
        thinking open is a block of its own, or, after the answer began,
        held for the next tool call."""
        if self.block is _Block.THINKING:
            return self._delta({"type": "signature_delta", "signature": signature}) + self._close_block()
        if self.next_index > 0:
            self.held_signature = signature
            return b""
        return self._signature_block(signature)

    def _tool_start(self, event: ToolCallStart) -> bytes:
        out = b""
        held, self.held_signature = self.held_signature, None
        if event.signature or held:
            signature = signature_out(event.signature, event.origin) if event.signature else held or ""
            out += self._signature_block(signature)
        block = {"type": "tool_use", "id": for_anthropic(event.id), "name": event.name, "input": {}}
        out += self._open_block(_Block.TOOL, block)
        self.tool_blocks[event.index] = self.next_index - 1
        return out

    def _tool_delta(self, index: int, arguments: str) -> bytes:
        if index not in self.tool_blocks or not arguments:
            return b""
        return self._delta({"type": "input_json_delta", "partial_json": arguments}, self.tool_blocks[index])

    def _tool_end(self, index: int) -> bytes:
        if self.block is _Block.TOOL and self.tool_blocks.get(index) == self.next_index - 1:
            return self._close_block()
        return b""

    def _server_run(self, use: ServerToolUse) -> bytes:
        use_block, result_block = _server_blocks(use)
        out = self._open_block(_Block.SERVER, {**use_block, "input": {}})
        out += self._delta({"type": "input_json_delta", "partial_json": dumps(use.input)})
        return out + self._open_block(_Block.SERVER, result_block) + self._close_block()

    def close(self) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        out = self._start() + self._close_block()
        stop = self.stop or "end_turn"
        if stop == "end_turn" and self.tool_blocks:
            stop = "tool_use"
        delta = {"stop_reason": STOP_TO_WIRE.get(stop, "end_turn"), "stop_sequence": self.stop_sequence}
        out += self._event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage_json(self.usage)})
        return out + self._event("message_stop", {"type": "message_stop"})


# ---------------------------------------------------------------- the client half


class ClaudeClient(ClientCodec):
    protocol = "claude"
    path_roots = ("/v1/messages",)
    routes = (
        Route("POST", r"/v1/messages", "generate"),
        Route("POST", r"/v1/messages/count_tokens", "count_tokens"),
        Route("GET", r"/v1/models", "list_models", header="anthropic-version"),
        Route("GET", r"/v1/models/(?P<model>.+)", "get_model", header="anthropic-version"),
    )

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        wire = validate(_MessagesRequest, body)
        return _decode(wire, bool(wire.stream), _betas(ctx))

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        stop = response.stop_reason
        if stop == "end_turn" and any(isinstance(p, ToolCall) for p in response.content):
            stop = "tool_use"
        return {
            "id": _message_id(response.id),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": _answer_blocks(response.content),
            "stop_reason": STOP_TO_WIRE.get(stop, "end_turn"),
            "stop_sequence": response.stop_sequence,
            "usage": usage_json(response.usage),
        }

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return _EventEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return _error_body(error)

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
