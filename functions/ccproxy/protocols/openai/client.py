"""OpenAI chat completions as clients speak it: the chat, embeddings and
model routes, a client's request decoded into the unified form, and unified
answers, streams and errors encoded as chat.completion records."""

from __future__ import annotations

import base64
import enum
import struct
import time
from typing import Any, Literal

from ...errors import ProxyError
from ...ids import for_openai, new_call_id
from ...jsonutil import dumpb, dumps
from ...unified import (
    CacheMark,
    Document,
    EmbedRequest,
    EmbedResponse,
    Finish,
    Message,
    Reasoning,
    Request,
    Response,
    ResponseFormat,
    Role,
    ServerTool,
    ServerToolUse,
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
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageUpdate,
)
from ..base import ClientCodec, ClientContext, Route, StreamEncoder
from ..common import cache_mark, name_tool_results, parse_data_url, validate
from .wire import (
    _ChatRequest,
    _EmbedRequest,
    _MessageIn,
    call_arguments,
    error_body,
    finish_reason,
    model_entry,
    model_list,
    usage_json,
    wire_calls,
)

# ---------------------------------------------------------------- content parts


def _file(part: dict[str, Any], where: str) -> Document:
    spec = part.get("file")
    data = spec.get("file_data") if isinstance(spec, dict) else None
    if not isinstance(data, str) or not data:
        raise ProxyError(
            400,
            f"{where}.file.file_data: give the file inline (file_id references cannot be forwarded)",
            param=f"{where}.file",
        )
    media_type, payload = "application/pdf", data
    if data.startswith("data:"):
        header, _, payload = data[5:].partition(",")
        media_type = header.split(";", 1)[0] or media_type
    filename = spec.get("filename") if isinstance(spec, dict) else None
    if media_type.startswith("text/"):
        try:
            text = base64.b64decode(payload).decode("utf-8")
        except ValueError:
            raise ProxyError(400, f"{where}.file.file_data: not base64 UTF-8 text", param=f"{where}.file") from None
        return Document(media_type="text/plain", text=text, title=filename, cache=cache_mark(part))
    return Document(media_type=media_type, data=payload, title=filename, cache=cache_mark(part))


def _user_parts(content: str | list[dict[str, Any]] | None, where: str) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(text=content)] if content else []
    parts: list[Any] = []
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise ProxyError(400, f"{where}.content.{i}: a content part must be an object", param=f"{where}.content")
        kind = part.get("type")
        if kind == "text":
            parts.append(Text(text=str(part.get("text", "")), cache=cache_mark(part)))
        elif kind == "image_url":
            url = (
                (part.get("image_url") or {}).get("url")
                if isinstance(part.get("image_url"), dict)
                else part.get("image_url")
            )
            if not isinstance(url, str) or not url:
                raise ProxyError(
                    400,
                    f"{where}.content.{i}.image_url.url: give the image's URL or data: URL",
                    param=f"{where}.content",
                )
            image = parse_data_url(url)
            image.cache = cache_mark(part)
            parts.append(image)
        elif kind == "file":
            parts.append(_file(part, f"{where}.content.{i}"))
        elif kind == "refusal":
            parts.append(Text(text=str(part.get("refusal", ""))))
        else:
            raise ProxyError(
                400,
                f"{where}.content.{i}: content parts of type {kind!r} are not supported; use text, image_url or file",
                param=f"{where}.content",
            )
    return parts


# ---------------------------------------------------------------- messages


def _decode_messages(wire: list[_MessageIn]) -> tuple[str | None, CacheMark | None, list[Message]]:
    """The system prompt (the system and developer messages that open the
    conversation), its cache breakpoint, and the turns; a system message
    after the first other turn stays a turn of its own, in place."""
    system: list[str] = []
    system_cache: CacheMark | None = None
    messages: list[Message] = []
    for i, message in enumerate(wire):
        where = f"messages.{i}"
        if message.role in ("system", "developer"):
            texts = [p for p in _user_parts(message.content, where) if isinstance(p, Text)]
            if not messages:
                system += [t.text for t in texts if t.text]
                system_cache = next((t.cache for t in reversed(texts) if t.cache), system_cache)
            else:
                _append_turn(messages, "system", texts)
        elif message.role == "user":
            _append_turn(messages, "user", _user_parts(message.content, where))
        elif message.role == "assistant":
            _append_turn(messages, "assistant", _assistant_parts(message, where))
        else:  # tool / function
            _append_turn(messages, "user", [_tool_result(message, where)])
    _tidy_turns(messages)
    name_tool_results(messages)
    return ("\n\n".join(system) or None), system_cache, messages


def _append_turn(messages: list[Message], role: Role, parts: list[Any]) -> None:
    """`parts` as a turn of `role`, merged into the last turn where it has the same role."""
    if not parts:
        return
    if messages and messages[-1].role == role:
        messages[-1].content.extend(parts)
    else:
        messages.append(Message(role=role, content=parts))


def _assistant_parts(message: _MessageIn, where: str) -> list[Any]:
    parts: list[Any] = []
    reasoning = message.reasoning_content or message.reasoning
    if reasoning:
        parts.append(Thinking(text=reasoning, origin="openai"))
    parts.extend(_user_parts(message.content, where))
    for call in message.tool_calls or []:
        parts.append(ToolCall(id=call.id, name=call.function.name, arguments=call_arguments(call.function.arguments)))
    if message.function_call is not None:
        parts.append(
            ToolCall(
                id="call_" + message.function_call.name,
                name=message.function_call.name,
                arguments=call_arguments(message.function_call.arguments),
            )
        )
    if not parts:
        parts.append(Text(text=""))
    return parts


def _tool_result(message: _MessageIn, where: str) -> ToolResult:
    """A tool (or legacy function) message as the result it carries."""
    if message.role == "tool" and not message.tool_call_id:
        raise ProxyError(
            400,
            f"{where}.tool_call_id: a tool message must name the call it answers",
            param=f"{where}.tool_call_id",
        )
    call_id = message.tool_call_id or "call_" + (message.name or "")
    content = _user_parts(message.content, where)
    cache = next((p.cache for p in reversed(content) if getattr(p, "cache", None)), None)
    return ToolResult(id=call_id, name=message.name, content=content, cache=cache)


def _tidy_turns(messages: list[Message]) -> None:
    # Tool results come first in a user turn (Anthropic requires it).
    for turn in messages:
        if turn.role == "user" and any(isinstance(p, ToolResult) for p in turn.content):
            turn.content.sort(key=lambda p: not isinstance(p, ToolResult))
        if turn.role == "assistant":
            turn.content = [p for p in turn.content if not (isinstance(p, Text) and not p.text)] or [Text(text="")]


# ---------------------------------------------------------------- tools and options


def _decode_tools(body: _ChatRequest) -> list[Tool]:
    tools = []
    for i, entry in enumerate(body.tools or []):
        if entry.get("type", "function") != "function" or not isinstance(entry.get("function"), dict):
            raise ProxyError(400, f"tools.{i}: only tools of type 'function' are supported", param=f"tools.{i}")
        function = entry["function"]
        if not isinstance(function.get("name"), str):
            raise ProxyError(400, f"tools.{i}.function.name: a tool needs a name", param=f"tools.{i}.function.name")
        tools.append(_tool(function, cache_mark(entry)))
    for function in body.functions or []:
        tools.append(_tool(function))
    return tools


def _tool(function: dict[str, Any], cache: CacheMark | None = None) -> Tool:
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise ProxyError(
            400, f"tools: the parameters of {function['name']!r} must be a JSON Schema object", param="tools"
        )
    return Tool(name=function["name"], description=function.get("description"), parameters=parameters, cache=cache)


_CHOICE_MODES: dict[str, Literal["auto", "any", "tool", "none"]] = {"auto": "auto", "none": "none", "required": "any"}


def _decode_tool_choice(value: str | dict[str, Any] | None) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        mode = _CHOICE_MODES.get(value)
        if mode is None:
            raise ProxyError(400, f"tool_choice: {value!r} is not one of auto, none, required", param="tool_choice")
        return ToolChoice(mode=mode)
    if value.get("type") == "function" or "name" in value:
        name = (value.get("function") or {}).get("name") or value.get("name")
        return ToolChoice(mode="tool", name=name)
    if value.get("type") == "allowed_tools":
        mode = (value.get("allowed_tools") or {}).get("mode", "auto")
        return ToolChoice(mode="any" if mode == "required" else "auto")
    raise ProxyError(400, "tool_choice: give auto, none, required or a function", param="tool_choice")


def _decode_response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    if not value:
        return None
    kind = value.get("type")
    if kind == "json_schema":
        spec = value.get("json_schema") or {}
        return ResponseFormat(
            type="json_schema", schema=spec.get("schema"), name=spec.get("name"), strict=spec.get("strict")
        )
    if kind in ("json_object", "text"):
        return ResponseFormat(type=kind)
    raise ProxyError(
        400, f"response_format.type: {kind!r} is not one of text, json_object, json_schema", param="response_format"
    )


def _decode_reasoning(body: _ChatRequest) -> Reasoning | None:
    effort = body.reasoning_effort
    thinking = (body.thinking or {}).get("type")
    if effort is None and thinking is None:
        return None
    if effort == "none" or thinking == "disabled":
        return Reasoning(enabled=False)
    return Reasoning(enabled=True, effort=effort)


# ---------------------------------------------------------------- stream encoder


class _EncoderState(enum.Enum):
    FRESH = "fresh"  # nothing sent yet
    STREAMING = "streaming"  # the role chunk is out
    ERRORED = "errored"  # an error event ended the stream


class _ChunkEncoder(StreamEncoder):
    """Unified events as chat.completion.chunk records."""

    def __init__(self, request: Request) -> None:
        self.state = _EncoderState.FRESH
        self.model = request.model
        self.id = "chatcmpl-" + new_call_id("")
        self.created = int(time.time())
        self.include_usage = request.stream_usage
        self.stop: StopReason | None = None
        self.usage = Usage()
        self.calls: dict[int, int] = {}  # unified index -> OpenAI index
        self.prefix = (
            f'{{"id":"{self.id}","object":"chat.completion.chunk","created":{self.created},"model":{dumps(self.model)},'
        ).encode()
        self.usage_null = b',"usage":null' if self.include_usage else b""

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + self.prefix + b'"choices":[' + dumpb(choice) + b"]" + self.usage_null + b"}\n\n"

    def _open(self, content: Any) -> bytes:
        if self.state is not _EncoderState.FRESH:
            return b""
        self.state = _EncoderState.STREAMING
        return self._chunk({"role": "assistant", "content": content})

    def feed(self, event: StreamEvent) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        match event:
            case Start():
                # The role chunk goes out at once: the client sees its first
                # byte as soon as the upstream's stream has begun.
                return self._open("")
            case TextDelta(text=text):
                return self._open("") + self._chunk({"content": text}) if text else self._open("")
            case ThinkingDelta(text=text):
                return self._open("") + self._chunk({"reasoning_content": text}) if text else b""
            case ToolCallStart(index=index, id=call_id, name=name):
                head = self._open(None)
                self.calls[index] = len(self.calls)
                fragment = {
                    "index": self.calls[index],
                    "id": for_openai(call_id),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                return head + self._chunk({"tool_calls": [fragment]})
            case ToolCallDelta(index=index, arguments=arguments):
                if index not in self.calls or not arguments:
                    return b""
                return self._chunk({"tool_calls": [{"index": self.calls[index], "function": {"arguments": arguments}}]})
            case Finish(stop_reason=stop):
                self.stop = stop
                return b""
            case UsageUpdate(usage=usage):
                self.usage = self.usage.merged(usage)
                return b""
            case StreamError(error=error):
                self.state = _EncoderState.ERRORED
                return b"data: " + dumpb(error_body(error)) + b"\n\n"
            case _:
                return b""

    def close(self) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        out = self._open("")
        stop = self.stop or "end_turn"
        if stop == "end_turn" and self.calls:
            stop = "tool_use"
        out += self._chunk({}, finish_reason(stop))
        if self.include_usage:
            usage = dumpb(usage_json(self.usage))
            out += b"data: " + self.prefix + b'"choices":[],"usage":' + usage + b"}\n\n"
        return out + b"data: [DONE]\n\n"


# ---------------------------------------------------------------- the client half


class OpenAIClient(ClientCodec):
    protocol = "openai"
    path_roots = ("/v1",)
    routes = (
        Route("POST", r"/v1/chat/completions", "generate"),
        Route("POST", r"/v1/embeddings", "embed"),
        Route("GET", r"/v1/models", "list_models"),
        Route("GET", r"/v1/models/(?P<model>.+)", "get_model"),
    )

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        wire = validate(_ChatRequest, body)
        if wire.n not in (None, 1):
            raise ProxyError(400, "n: ccproxy returns one choice; send n=1 or leave it out", param="n")
        system, system_cache, messages = _decode_messages(wire.messages)
        stop = [wire.stop] if isinstance(wire.stop, str) else list(wire.stop or [])
        stream = bool(wire.stream)
        search = getattr(wire, "web_search_options", None)
        return Request(
            model=wire.model,
            system=system,
            system_cache=system_cache,
            messages=messages,
            server_tools=[ServerTool(kind="web_search", name="web_search", options=search)]
            if isinstance(search, dict)
            else [],
            tools=_decode_tools(wire),
            tool_choice=_decode_tool_choice(wire.tool_choice if wire.tool_choice is not None else wire.function_call),
            parallel_tool_calls=wire.parallel_tool_calls,
            max_tokens=wire.max_completion_tokens or wire.max_tokens,
            temperature=wire.temperature,
            top_p=wire.top_p,
            top_k=wire.top_k,
            stop=stop,
            seed=wire.seed,
            presence_penalty=wire.presence_penalty,
            frequency_penalty=wire.frequency_penalty,
            response_format=_decode_response_format(wire.response_format),
            reasoning=_decode_reasoning(wire),
            stream=stream,
            stream_usage=bool(stream and wire.stream_options and wire.stream_options.include_usage),
        )

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        text = "".join(p.text for p in response.content if isinstance(p, Text))
        reasoning = "".join(p.text for p in response.content if isinstance(p, Thinking))
        calls = [p for p in response.content if isinstance(p, ToolCall)]
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = wire_calls(calls)
        sources = [r for p in response.content if isinstance(p, ServerToolUse) for r in p.results]
        if sources:
            # The sources a web search found, as OpenAI's search models cite them.
            message["annotations"] = [
                {
                    "type": "url_citation",
                    "url_citation": {"url": r.url, "title": r.title or r.url, "start_index": 0, "end_index": len(text)},
                }
                for r in sources
            ]
        stop = response.stop_reason
        if stop == "end_turn" and calls:
            stop = "tool_use"
        return {
            "id": "chatcmpl-" + new_call_id(""),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(stop)}],
            "usage": usage_json(response.usage),
        }

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return _ChunkEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return error_body(error)

    # ------------------------------------------------------------ models

    def encode_model_list(self, names: list[str]) -> dict[str, Any]:
        return model_list(names)

    def encode_model(self, name: str) -> dict[str, Any]:
        return model_entry(name)

    # ------------------------------------------------------------ embeddings

    def decode_embed_request(self, body: Any, ctx: ClientContext) -> EmbedRequest:
        wire = validate(_EmbedRequest, body)
        inputs = [wire.input] if isinstance(wire.input, str) else wire.input
        return EmbedRequest(
            model=wire.model,
            inputs=inputs,
            dimensions=wire.dimensions,
            client_state={"encoding": wire.encoding_format or "float"},
        )

    def encode_embed_response(self, response: EmbedResponse, request: EmbedRequest) -> dict[str, Any]:
        as_base64 = request.client_state.get("encoding") == "base64"
        data = []
        for i, vector in enumerate(response.vectors):
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = response.input_tokens or 0
        return {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
