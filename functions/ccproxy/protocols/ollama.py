"""Ollama's native API, both as the client's
protocol and as an upstream's."""

from __future__ import annotations

import enum
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ProxyError
from ..framing import NDJSONDecoder
from ..ids import new_call_id
from ..jsonutil import dumpb, dumps, loads_object
from ..unified import (
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
    Start,
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
from .base import (
    ClientContext,
    Codec,
    RecordDecoder,
    Route,
    StreamDecoder,
    StreamEncoder,
)
from .common import (
    as_text_parts,
    call_names,
    fold_system_turns,
    now_iso,
    pair_tool_results,
    retry_after,
    sniff_image_type,
    text_of,
    upstream_error_body,
    validate,
)

# What ccproxy reports as its Ollama version: recent enough that clients
# checking for tools and thinking support enable them.
OLLAMA_VERSION = "0.13.0"

# ---------------------------------------------------------------- wire models


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Function(_Wire):
    name: str
    arguments: dict[str, Any] | str | None = None


class _CallIn(_Wire):
    id: str | None = None
    function: _Function


class _MessageIn(_Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[_CallIn] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class _Options(_Wire):
    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | str | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class _Common(_Wire):
    model: str
    format: str | dict[str, Any] | None = None
    options: _Options | None = None
    think: bool | Literal["low", "medium", "high", "max"] | None = None
    stream: bool | None = True


class _ChatRequest(_Common):
    messages: list[_MessageIn] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class _GenerateRequest(_Common):
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None


class _EmbedRequest(_Wire):
    model: str
    input: str | list[str]
    dimensions: int | None = None


# ---------------------------------------------------------------- mappings


def _done_reason(stop: StopReason) -> str:
    return "length" if stop in ("max_tokens", "context_window") else "stop"


def _stop_from_wire(reason: str | None, called: bool) -> StopReason:
    if reason == "length":
        return "max_tokens"
    return "tool_use" if called else "end_turn"


def _metrics(usage: Usage) -> dict[str, Any]:
    return {
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": usage.input_tokens or 0,
        "prompt_eval_duration": 0,
        "eval_count": usage.output_tokens or 0,
        "eval_duration": 0,
    }


def _usage_from(body: dict[str, Any]) -> Usage:
    return Usage(input_tokens=body.get("prompt_eval_count"), output_tokens=body.get("eval_count"))


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


def _arguments(value: dict[str, Any] | str | None) -> dict[str, Any]:
    return value if isinstance(value, dict) else loads_object(value or "")


# ---------------------------------------------------------------- client request decoding


def _decode_messages(wire: list[_MessageIn]) -> tuple[str | None, list[Message]]:
    system: list[str] = []
    messages: list[Message] = []
    for i, message in enumerate(wire):
        where = f"messages.{i}"
        parts: list[Any] = []
        if message.role == "system":
            # The ones that open the conversation are its system prompt; a
            # later one is a turn of its own.
            if message.content and not messages:
                system.append(message.content)
            elif message.content:
                messages.append(Message(role="system", content=[Text(text=message.content)]))
            continue
        role: Role
        if message.role == "tool":
            content: list[Any] = [Text(text=message.content or "")]
            content += _images(message.images, where)
            parts.append(ToolResult(id=message.tool_call_id or "", name=message.tool_name, content=content))
            role = "user"
        elif message.role == "assistant":
            if message.thinking:
                parts.append(Thinking(text=message.thinking, origin="ollama"))
            if message.content:
                parts.append(Text(text=message.content))
            for call in message.tool_calls or []:
                parts.append(
                    ToolCall(
                        id=call.id or new_call_id(),
                        name=call.function.name,
                        arguments=_arguments(call.function.arguments),
                    )
                )
            role = "assistant"
        else:
            if message.content:
                parts.append(Text(text=message.content))
            parts += _images(message.images, where)
            role = "user"
        if not parts:
            parts = [Text(text="")]
        if messages and messages[-1].role == role:
            messages[-1].content.extend(parts)
        else:
            messages.append(Message(role=role, content=parts))
    for turn in messages:
        if turn.role == "user":
            turn.content.sort(key=lambda p: not isinstance(p, ToolResult))
            turn.content = [p for p in turn.content if not (isinstance(p, Text) and not p.text)] or [Text(text="")]
    pair_tool_results(messages)
    return ("\n\n".join(system) or None), messages


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


def _sampling(wire: _Common) -> dict[str, Any]:
    options = wire.options or _Options()
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


# ---------------------------------------------------------------- client answers


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
        call = {
            "id": call_id,
            "function": {"index": index, "name": name, "arguments": loads_object("".join(fragments))},
        }
        return b"" if self.generate else self._line(tool_calls=[call])

    def close(self) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        out = b"".join(self._emit_call(i) for i in sorted(self.calls))
        final = {"done_reason": _done_reason(self.stop or "end_turn"), **_metrics(self.usage)}
        return out + self._line(final=final)


# ---------------------------------------------------------------- upstream stream decoder


class _DecoderState(enum.Enum):
    WAITING = "waiting"  # no line yet
    STREAMING = "streaming"  # lines arriving
    DONE = "done"  # the done line, or an error line


class _LineDecoder(RecordDecoder):
    def __init__(self) -> None:
        super().__init__(NDJSONDecoder())
        self.state = _DecoderState.WAITING
        self.calls = 0

    def _ended(self) -> bool:
        return self.state not in (_DecoderState.WAITING, _DecoderState.STREAMING)

    def _record(self, body: Any, events: list[StreamEvent]) -> None:
        if self.state is _DecoderState.DONE or not isinstance(body, dict):
            return
        if body.get("error"):
            events.append(StreamError(ProxyError(500, str(body["error"]))))
            self.state = _DecoderState.DONE
            return
        if self.state is _DecoderState.WAITING:
            events.append(Start(model=body.get("model")))
            self.state = _DecoderState.STREAMING
        message = body.get("message") or {}
        thinking = message.get("thinking") or body.get("thinking")
        if thinking:
            events.append(ThinkingDelta(thinking))
        text = message.get("content") or body.get("response")
        if text:
            events.append(TextDelta(text))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            index = self.calls
            self.calls += 1
            events.append(
                ToolCallStart(index, call.get("id") or new_call_id(), function.get("name", ""), origin="ollama")
            )
            events.append(ToolCallDelta(index, dumps(_arguments(function.get("arguments")))))
            events.append(ToolCallEnd(index))
        if body.get("done"):
            events.append(UsageUpdate(_usage_from(body)))
            events.append(Finish(_stop_from_wire(body.get("done_reason"), self.calls > 0)))
            self.state = _DecoderState.DONE


# ---------------------------------------------------------------- upstream request encoding


def _encode_messages(request: Request) -> list[dict[str, Any]]:
    request = fold_system_turns(request)
    names = call_names(request.messages)
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for message in request.messages:
        message = message.model_copy(update={"content": as_text_parts(message.content)})
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": text_of(message.content)}
            thinking = "".join(p.text for p in message.content if isinstance(p, Thinking) and p.origin == "ollama")
            if thinking:
                entry["thinking"] = thinking
            calls = [p for p in message.content if isinstance(p, ToolCall)]
            if calls:
                entry["tool_calls"] = [
                    {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}}
                    for i, c in enumerate(calls)
                ]
            out.append(entry)
            continue
        for result in (p for p in message.content if isinstance(p, ToolResult)):
            text = text_of(result.content)
            entry = {
                "role": "tool",
                "content": ("Error: " + text) if result.is_error else text,
                "tool_name": result.name or names.get(result.id, ""),
                "tool_call_id": result.id,
            }
            images = [p.data for p in result.content if isinstance(p, Image) and p.data]
            if images:
                entry["images"] = images
            out.append(entry)
        others = [p for p in message.content if isinstance(p, (Text, Image))]
        if others:
            entry = {"role": "user", "content": text_of(others)}
            images = [p.data for p in others if isinstance(p, Image) and p.data]
            if images:
                entry["images"] = images
            out.append(entry)
    return out


def _options(request: Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None:
            options[name] = value
    if request.stop:
        options["stop"] = request.stop
    return options


# ---------------------------------------------------------------- the codec


class OllamaCodec(Codec):
    protocol = "ollama"
    stream_media_type = "application/x-ndjson"
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
    needs_inline_images = True

    # ------------------------------------------------------------ client side

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        if ctx.endpoint == "generate":
            wire_generate = validate(_GenerateRequest, body)
            parts: list[Any] = [Text(text=wire_generate.prompt)] if wire_generate.prompt else []
            parts += _images(wire_generate.images, "request")
            return Request(
                model=wire_generate.model,
                system=wire_generate.system or None,
                messages=[Message(role="user", content=parts or [Text(text="")])],
                response_format=_decode_format(wire_generate.format),
                reasoning=_decode_think(wire_generate.think),
                stream=wire_generate.stream is not False,
                client_state={"endpoint": "generate"},
                **_sampling(wire_generate),
            )
        wire = validate(_ChatRequest, body)
        if not wire.messages:
            raise ProxyError(400, "messages: give at least one message", param="messages")
        system, messages = _decode_messages(wire.messages)
        tools = []
        for i, entry in enumerate(wire.tools or []):
            function = entry.get("function") if isinstance(entry, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise ProxyError(
                    400, f"tools.{i}.function.name: a tool needs a function with a name", param=f"tools.{i}"
                )
            tools.append(
                Tool(
                    name=function["name"],
                    description=function.get("description"),
                    parameters=function.get("parameters") or {"type": "object", "properties": {}},
                )
            )
        return Request(
            model=wire.model,
            system=system,
            messages=messages,
            tools=tools,
            response_format=_decode_format(wire.format),
            reasoning=_decode_think(wire.think),
            stream=wire.stream is not False,
            **_sampling(wire),
        )

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        calls = [p for p in response.content if isinstance(p, ToolCall)]
        return _answer(
            request.model,
            request.client_state.get("endpoint") == "generate",
            text_of(response.content),
            "".join(p.text for p in response.content if isinstance(p, Thinking)),
            [
                {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}}
                for i, c in enumerate(calls)
            ],
            {"done_reason": _done_reason(response.stop_reason), **_metrics(response.usage)},
        )

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return _LineEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return {"error": error.message}

    # ------------------------------------------------------------ upstream side

    def upstream_path(self, model: str, stream: bool) -> str:
        return "/api/chat"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": _encode_messages(request), "stream": request.stream}
        if request.tools and not (request.tool_choice and request.tool_choice.mode == "none"):
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
                }
                for t in request.tools
            ]
        options = _options(request)
        if options:
            body["options"] = options
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_object":
            body["format"] = "json"
        elif fmt is not None and fmt.type == "json_schema" and fmt.schema_:
            body["format"] = fmt.schema_
        if request.reasoning is not None and request.reasoning.enabled is not None:
            body["think"] = request.reasoning.enabled
        return body

    def decode_response(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ProxyError(502, "the upstream answer is not a JSON object")
        if body.get("done") is False:
            # One line of a stream where a whole answer belongs: the rest was lost.
            raise ProxyError(502, "the upstream's answer ended before it was done")
        message = body.get("message") or {}
        content: list[Any] = []
        thinking = message.get("thinking") or body.get("thinking")
        if thinking:
            content.append(Thinking(text=thinking, origin="ollama"))
        text = message.get("content") or body.get("response")
        if text:
            content.append(Text(text=text))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            content.append(
                ToolCall(
                    id=call.get("id") or new_call_id(),
                    name=function.get("name", ""),
                    arguments=_arguments(function.get("arguments")),
                    origin="ollama",
                )
            )
        called = any(isinstance(p, ToolCall) for p in content)
        return Response(
            model=body.get("model"),
            content=content,
            stop_reason=_stop_from_wire(body.get("done_reason"), called),
            usage=_usage_from(body),
        )

    def stream_decoder(self) -> StreamDecoder:
        return _LineDecoder()

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        parsed, message = upstream_error_body(body, status)
        if isinstance(parsed, dict) and parsed.get("error"):
            error = parsed["error"]
            message = error if isinstance(error, str) else str(error.get("message") or error)
        return ProxyError(status, message, retry_after=retry_after(headers))

    # ------------------------------------------------------------ models

    def encode_model_list(self, names: list[str]) -> dict[str, Any]:
        return {"models": [self._tag(name) for name in names]}

    @staticmethod
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

    def answer_locally(self, endpoint: str, body: Any, names: list[str]) -> dict[str, Any]:
        if endpoint == "version":
            return {"version": OLLAMA_VERSION}
        if endpoint == "ps":
            return {"models": []}
        model = (body or {}).get("model") or (body or {}).get("name") if isinstance(body, dict) else None
        if not model:
            raise ProxyError(400, "model: name the model to show", param="model")
        return {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": self._tag(model)["details"],
            "model_info": {"general.architecture": "ccproxy"},
            "capabilities": ["completion", "tools", "thinking", "vision"],
            "modified_at": "2025-01-01T00:00:00Z",
        }

    # ------------------------------------------------------------ embeddings

    def decode_embed_request(self, body: Any, ctx: ClientContext) -> EmbedRequest:
        wire = validate(_EmbedRequest, body)
        inputs = [wire.input] if isinstance(wire.input, str) else wire.input
        return EmbedRequest(model=wire.model, inputs=inputs, dimensions=wire.dimensions)

    def encode_embed_response(self, response: EmbedResponse, request: EmbedRequest) -> dict[str, Any]:
        return {"model": request.model, "embeddings": response.vectors, "prompt_eval_count": response.input_tokens or 0}

    def embed_path(self, model: str) -> str | None:
        return "/api/embed"

    def encode_embed_request(self, request: EmbedRequest, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": request.inputs}
        if request.dimensions:
            body["dimensions"] = request.dimensions
        return body

    def decode_embed_response(self, body: Any) -> EmbedResponse:
        return EmbedResponse(
            model=body.get("model"), vectors=body.get("embeddings") or [], input_tokens=body.get("prompt_eval_count")
        )
