"""Ollama's native API as clients speak it: /api/chat and /api/generate
decoded into unified requests, answers encoded back (whole or as NDJSON
lines), and the routes Ollama clients probe (tags, show, version, ps) answered
by the proxy itself."""

from __future__ import annotations

import enum
from typing import Any

from ...errors import ProxyError
from ...ids import new_call_id
from ...jsonutil import dumpb, loads_object
from ...unified import (
    EmbedRequest,
    EmbedResponse,
    Finish,
    Image,
    Message,
    Reasoning,
    Request,
    Response,
    ResponseFormat,
    Role,
    StopReason,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    Usage,
    UsageUpdate,
)
from ..base import ClientCodec, ClientContext, Route, StreamEncoder
from ..common import now_iso, pair_tool_results, sniff_image_type, text_of, validate
from .wire import (
    STREAM_MEDIA_TYPE,
    WireChatRequest,
    WireCommon,
    WireEmbedRequest,
    WireGenerateRequest,
    WireMessage,
    WireOptions,
    arguments_of,
    wire_call,
)

# What ccproxy reports as its Ollama version: recent enough that clients
# checking for tools and thinking support enable them.
OLLAMA_VERSION = "0.13.0"

# ---------------------------------------------------------------- mappings


def _done_reason(stop: StopReason) -> str:
    return "length" if stop in ("max_tokens", "context_window") else "stop"


def _metrics(usage: Usage) -> dict[str, Any]:
    return {
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": usage.input_tokens or 0,
        "prompt_eval_duration": 0,
        "eval_count": usage.output_tokens or 0,
        "eval_duration": 0,
    }


def _images(values: list[str] | None, where: str) -> list[Image]:
    images = []
    for i, value in enumerate(values or []):
        if value.startswith("data:"):
            header, _, value = value.partition(",")
        elif value.startswith(("http://", "https://")):
            raise ProxyError(
                400, f"{where}.images.{i}: Ollama images are base64 data, not URLs", param=f"{where}.images"
            )
        images.append(Image(media_type=sniff_image_type(value), data=value))
    return images


# ---------------------------------------------------------------- request decoding


def _decode_tool_result(message: WireMessage, where: str) -> ToolResult:
    content: list[Any] = [Text(text=message.content or "")]
    content += _images(message.images, where)
    return ToolResult(id=message.tool_call_id or "", name=message.tool_name, content=content)


def _decode_assistant(message: WireMessage) -> list[Any]:
    parts: list[Any] = []
    if message.thinking:
        parts.append(Thinking(text=message.thinking, origin="ollama"))
    if message.content:
        parts.append(Text(text=message.content))
    for call in message.tool_calls or []:
        parts.append(
            ToolCall(
                id=call.id or new_call_id(),
                name=call.function.name,
                arguments=arguments_of(call.function.arguments),
            )
        )
    return parts


def _decode_turn(message: WireMessage, where: str) -> tuple[Role, list[Any]]:
    """A non-system message as the role of its unified turn and its parts."""
    parts: list[Any] = []
    role: Role
    if message.role == "tool":
        parts.append(_decode_tool_result(message, where))
        role = "user"
    elif message.role == "assistant":
        parts = _decode_assistant(message)
        role = "assistant"
    else:
        if message.content:
            parts.append(Text(text=message.content))
        parts += _images(message.images, where)
        role = "user"
    return role, parts or [Text(text="")]


def _tidy_user_turns(messages: list[Message]) -> None:
    for turn in messages:
        if turn.role == "user":
            turn.content.sort(key=lambda p: not isinstance(p, ToolResult))
            turn.content = [p for p in turn.content if not (isinstance(p, Text) and not p.text)] or [Text(text="")]


def _decode_messages(wire: list[WireMessage]) -> tuple[str | None, list[Message]]:
    system: list[str] = []
    messages: list[Message] = []
    for i, message in enumerate(wire):
        if message.role == "system":
            # The ones that open the conversation are its system prompt; a
            # later one is a turn of its own.
            if message.content and not messages:
                system.append(message.content)
            elif message.content:
                messages.append(Message(role="system", content=[Text(text=message.content)]))
            continue
        role, parts = _decode_turn(message, f"messages.{i}")
        if messages and messages[-1].role == role:
            messages[-1].content.extend(parts)
        else:
            messages.append(Message(role=role, content=parts))
    _tidy_user_turns(messages)
    pair_tool_results(messages)
    return ("\n\n".join(system) or None), messages


def _decode_tools(entries: list[dict[str, Any]] | None) -> list[Tool]:
    tools = []
    for i, entry in enumerate(entries or []):
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ProxyError(400, f"tools.{i}.function.name: a tool needs a function with a name", param=f"tools.{i}")
        tools.append(
            Tool(
                name=function["name"],
                description=function.get("description"),
                parameters=function.get("parameters") or {"type": "object", "properties": {}},
            )
        )
    return tools


def _decode_format(value: str | dict[str, Any] | None) -> ResponseFormat | None:
    if value is None or value == "":
        return None
    if value == "json":
        return ResponseFormat(type="json_object")
    if isinstance(value, dict):
        return ResponseFormat(type="json_schema", schema=value)
    raise ProxyError(400, 'format: give "json" or a JSON schema', param="format")


def _decode_think(value: bool | str | None) -> Reasoning | None:
    if value is None:
        return None
    if value is False:
        return Reasoning(enabled=False)
    return Reasoning(enabled=True, effort=value if isinstance(value, str) else None)


def _sampling(wire: WireCommon) -> dict[str, Any]:
    options = wire.options or WireOptions()
    stop = [options.stop] if isinstance(options.stop, str) else list(options.stop or [])
    return {
        "max_tokens": options.num_predict if options.num_predict and options.num_predict > 0 else None,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "stop": stop,
        "seed": options.seed,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
    }


def _decode_generate(body: Any) -> Request:
    wire = validate(WireGenerateRequest, body)
    parts: list[Any] = [Text(text=wire.prompt)] if wire.prompt else []
    parts += _images(wire.images, "request")
    return Request(
        model=wire.model,
        system=wire.system or None,
        messages=[Message(role="user", content=parts or [Text(text="")])],
        response_format=_decode_format(wire.format),
        reasoning=_decode_think(wire.think),
        stream=wire.stream is not False,
        client_state={"endpoint": "generate"},
        **_sampling(wire),
    )


def _decode_chat(body: Any) -> Request:
    wire = validate(WireChatRequest, body)
    if not wire.messages:
        raise ProxyError(400, "messages: give at least one message", param="messages")
    system, messages = _decode_messages(wire.messages)
    return Request(
        model=wire.model,
        system=system,
        messages=messages,
        tools=_decode_tools(wire.tools),
        response_format=_decode_format(wire.format),
        reasoning=_decode_think(wire.think),
        stream=wire.stream is not False,
        **_sampling(wire),
    )


# ---------------------------------------------------------------- answers


class _EncoderState(enum.Enum):
    STREAMING = "streaming"  # lines go out as events arrive
    ERRORED = "errored"  # an error line ended the stream


def _answer(
    model: str,
    generate: bool,
    text: str = "",
    thinking: str = "",
    tool_calls: list[dict[str, Any]] | None = None,
    final: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An answer object, whole or one stream line: /api/generate's flat
    fields or /api/chat's message (generate has no tool calls); `final`
    (done_reason and metrics) makes it the last."""
    body: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if generate:
        body["response"] = text
        if thinking:
            body["thinking"] = thinking
    else:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        body["message"] = message
    body["done"] = final is not None
    if final:
        body.update(final)
    return body


class _LineEncoder(StreamEncoder):
    """Unified events as Ollama NDJSON: one line per
    piece, whole tool calls, metrics on the final `done` line."""

    def __init__(self, request: Request) -> None:
        self.state = _EncoderState.STREAMING
        self.generate = request.client_state.get("endpoint") == "generate"
        self.model = request.model
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, fragments]
        self.stop: StopReason | None = None
        self.usage = Usage()

    def _line(
        self,
        text: str = "",
        thinking: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        final: dict[str, Any] | None = None,
    ) -> bytes:
        return dumpb(_answer(self.model, self.generate, text, thinking, tool_calls, final)) + b"\n"

    def feed(self, event: StreamEvent) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        match event:
            case TextDelta(text=text) if text:
                return self._line(text=text)
            case ThinkingDelta(text=text) if text:
                return self._line(thinking=text)
            case ToolCallStart(index=index, id=call_id, name=name):
                self.calls[index] = [call_id, name, []]
            case ToolCallDelta(index=index, arguments=arguments) if index in self.calls:
                self.calls[index][2].append(arguments)
            case ToolCallEnd(index=index) if index in self.calls:
                return self._emit_call(index)
            case UsageUpdate(usage=usage):
                self.usage = self.usage.merged(usage)
            case Finish(stop_reason=stop):
                self.stop = stop
            case StreamError(error=error):
                self.state = _EncoderState.ERRORED
                return dumpb({"error": error.message}) + b"\n"
        return b""

    def _emit_call(self, index: int) -> bytes:
        call_id, name, fragments = self.calls.pop(index)
        call = wire_call(index, call_id, name, loads_object("".join(fragments)))
        return b"" if self.generate else self._line(tool_calls=[call])

    def close(self) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        out = b"".join(self._emit_call(i) for i in sorted(self.calls))
        final = {"done_reason": _done_reason(self.stop or "end_turn"), **_metrics(self.usage)}
        return out + self._line(final=final)


# ---------------------------------------------------------------- models


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 0,
        "digest": "",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "",
            "families": [],
            "parameter_size": "",
            "quantization_level": "",
        },
    }


def _show(body: Any) -> dict[str, Any]:
    model = (body or {}).get("model") or (body or {}).get("name") if isinstance(body, dict) else None
    if not model:
        raise ProxyError(400, "model: name the model to show", param="model")
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": _tag(model)["details"],
        "model_info": {"general.architecture": "ccproxy"},
        "capabilities": ["completion", "tools", "thinking", "vision"],
        "modified_at": "2025-01-01T00:00:00Z",
    }


# ---------------------------------------------------------------- the client half


class OllamaClient(ClientCodec):
    protocol = "ollama"
    stream_media_type = STREAM_MEDIA_TYPE
    path_roots = ("/api",)
    routes = (
        Route("POST", r"/api/chat", "generate", endpoint="chat"),
        # /api/generate's body is not /api/chat's: converted even for an Ollama upstream.
        Route("POST", r"/api/generate", "generate", endpoint="generate", passthrough=False),
        Route("GET", r"/api/tags", "list_models"),
        Route("POST", r"/api/show", "local", endpoint="show"),
        Route("GET", r"/api/version", "local", endpoint="version"),
        Route("GET", r"/api/ps", "local", endpoint="ps"),
        Route("POST", r"/api/embed", "embed"),
    )

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        if ctx.endpoint == "generate":
            return _decode_generate(body)
        return _decode_chat(body)

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        calls = [p for p in response.content if isinstance(p, ToolCall)]
        return _answer(
            request.model,
            request.client_state.get("endpoint") == "generate",
            text_of(response.content),
            "".join(p.text for p in response.content if isinstance(p, Thinking)),
            [wire_call(i, c.id, c.name, c.arguments) for i, c in enumerate(calls)],
            {"done_reason": _done_reason(response.stop_reason), **_metrics(response.usage)},
        )

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return _LineEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return {"error": error.message}

    # ------------------------------------------------------------ models

    def encode_model_list(self, names: list[str]) -> dict[str, Any]:
        return {"models": [_tag(name) for name in names]}

    def answer_locally(self, endpoint: str, body: Any, names: list[str]) -> dict[str, Any]:
        if endpoint == "version":
            return {"version": OLLAMA_VERSION}
        if endpoint == "ps":
            return {"models": []}
        return _show(body)

    # ------------------------------------------------------------ embeddings

    def decode_embed_request(self, body: Any, ctx: ClientContext) -> EmbedRequest:
        wire = validate(WireEmbedRequest, body)
        inputs = [wire.input] if isinstance(wire.input, str) else wire.input
        return EmbedRequest(model=wire.model, inputs=inputs, dimensions=wire.dimensions)

    def encode_embed_response(self, response: EmbedResponse, request: EmbedRequest) -> dict[str, Any]:
        return {"model": request.model, "embeddings": response.vectors, "prompt_eval_count": response.input_tokens or 0}
