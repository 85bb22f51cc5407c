"""OpenAI chat completions, both as the client's
protocol and as an upstream's."""

from __future__ import annotations

import base64
import enum
import struct
import time
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ProxyError, status_for_kind
from ..framing import SSEDecoder, SSEEvent, parse_json_data
from ..ids import for_openai, new_call_id
from ..jsonutil import dumpb, dumps, loads_object
from ..unified import (
    CacheMark,
    Document,
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
    ToolCallEnd,
    ToolCallStart,
    ToolChoice,
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
    budget_to_effort,
    cache_mark,
    data_url,
    document_text,
    name_tool_results,
    parse_data_url,
    retry_after,
    server_tool_text,
    text_of,
    upstream_error_body,
    validate,
)

# ---------------------------------------------------------------- wire models (client requests)


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

_FINISH_TO_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "context_window": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "other": "stop",
}
_ERROR_TYPES = {
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
_KIND_BY_TYPE = {
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
    return _STOP_TO_FINISH.get(stop, "stop")


def _usage_json(usage: Usage) -> dict[str, Any]:
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


def _usage_from(body: Any) -> Usage:
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


# ---------------------------------------------------------------- client request decoding


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


def _decode_messages(wire: list[_MessageIn]) -> tuple[str | None, CacheMark | None, list[Message]]:
    """The system prompt (the system and developer messages that open the
    conversation), its cache breakpoint, and the turns; a system message
    after the first other turn stays a turn of its own, in place."""
    system: list[str] = []
    system_cache: CacheMark | None = None
    messages: list[Message] = []

    def append(role: Role, parts: list[Any]) -> None:
        if not parts:
            return
        if messages and messages[-1].role == role:
            messages[-1].content.extend(parts)
        else:
            messages.append(Message(role=role, content=parts))

    for i, message in enumerate(wire):
        where = f"messages.{i}"
        if message.role in ("system", "developer"):
            texts = [p for p in _user_parts(message.content, where) if isinstance(p, Text)]
            if not messages:
                system += [t.text for t in texts if t.text]
                system_cache = next((t.cache for t in reversed(texts) if t.cache), system_cache)
            else:
                append("system", texts)
        elif message.role == "user":
            append("user", _user_parts(message.content, where))
        elif message.role == "assistant":
            parts: list[Any] = []
            reasoning = message.reasoning_content or message.reasoning
            if reasoning:
                parts.append(Thinking(text=reasoning, origin="openai"))
            parts.extend(_user_parts(message.content, where))
            for call in message.tool_calls or []:
                parts.append(
                    ToolCall(id=call.id, name=call.function.name, arguments=_arguments(call.function.arguments))
                )
            if message.function_call is not None:
                parts.append(
                    ToolCall(
                        id="call_" + message.function_call.name,
                        name=message.function_call.name,
                        arguments=_arguments(message.function_call.arguments),
                    )
                )
            if not parts:
                parts.append(Text(text=""))
            append("assistant", parts)
        else:  # tool / function
            if message.role == "tool" and not message.tool_call_id:
                raise ProxyError(
                    400,
                    f"{where}.tool_call_id: a tool message must name the call it answers",
                    param=f"{where}.tool_call_id",
                )
            call_id = message.tool_call_id or "call_" + (message.name or "")
            content = _user_parts(message.content, where)
            cache = next((p.cache for p in reversed(content) if getattr(p, "cache", None)), None)
            append("user", [ToolResult(id=call_id, name=message.name, content=content, cache=cache)])
    # Tool results come first in a user turn (Anthropic requires it).
    for turn in messages:
        if turn.role == "user" and any(isinstance(p, ToolResult) for p in turn.content):
            turn.content.sort(key=lambda p: not isinstance(p, ToolResult))
        if turn.role == "assistant":
            turn.content = [p for p in turn.content if not (isinstance(p, Text) and not p.text)] or [Text(text="")]
    name_tool_results(messages)
    return ("\n\n".join(system) or None), system_cache, messages


def _arguments(value: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return loads_object(value or "")


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


# ---------------------------------------------------------------- client stream encoder


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
                return b"data: " + dumpb(_error_body(error)) + b"\n\n"
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
            usage = dumpb(_usage_json(self.usage))
            out += b"data: " + self.prefix + b'"choices":[],"usage":' + usage + b"}\n\n"
        return out + b"data: [DONE]\n\n"


def _error_body(error: ProxyError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": _ERROR_TYPES.get(error.kind, "server_error"),
            "param": error.param,
            "code": error.code,
        }
    }


# ---------------------------------------------------------------- upstream stream decoder


class _DecoderState(enum.Enum):
    WAITING = "waiting"  # no chunk yet
    STREAMING = "streaming"  # chunks arriving
    FINISHED = "finished"  # finish_reason seen; usage may follow
    DONE = "done"  # [DONE] seen


class _ChunkDecoder(RecordDecoder):
    def __init__(self) -> None:
        super().__init__(SSEDecoder())
        self.state = _DecoderState.WAITING
        self.calls: dict[int, int] = {}  # OpenAI index -> unified index
        self.open_calls: list[int] = []

    def _ended(self) -> bool:
        return self.state not in (_DecoderState.WAITING, _DecoderState.STREAMING)

    def _record(self, record: SSEEvent, events: list[StreamEvent]) -> None:
        data = record.data
        if not data or self.state is _DecoderState.DONE:
            return
        if data.startswith("[DONE]"):
            self._end_calls(events)
            if self.state is not _DecoderState.FINISHED:
                events.append(Finish("tool_use" if self.calls else "end_turn"))
            self.state = _DecoderState.DONE
            return
        body = parse_json_data(data)
        if not isinstance(body, dict):
            return
        if body.get("error"):
            events.append(StreamError(_in_stream_error(body["error"])))
            self.state = _DecoderState.DONE
            return
        if self.state is _DecoderState.WAITING:
            events.append(Start(id=body.get("id"), model=body.get("model")))
            self.state = _DecoderState.STREAMING
        for choice in body.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            self._delta(choice.get("delta") or {}, events)
            reason = choice.get("finish_reason")
            if reason:
                self._end_calls(events)
                stop = _FINISH_TO_STOP.get(reason, "end_turn")
                if stop == "end_turn" and self.calls:
                    stop = "tool_use"
                events.append(Finish(stop))
                self.state = _DecoderState.FINISHED
        if body.get("usage"):
            events.append(UsageUpdate(_usage_from(body["usage"])))

    def _delta(self, delta: dict[str, Any], events: list[StreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            events.append(ThinkingDelta(reasoning))
        if delta.get("content"):
            events.append(TextDelta(delta["content"]))
        for fragment in delta.get("tool_calls") or []:
            wire_index = fragment.get("index", 0)
            function = fragment.get("function") or {}
            if wire_index not in self.calls:
                index = len(self.calls)
                self.calls[wire_index] = index
                self.open_calls.append(index)
                events.append(
                    ToolCallStart(
                        index, fragment.get("id") or new_call_id(), function.get("name") or "", origin="openai"
                    )
                )
            if function.get("arguments"):
                events.append(ToolCallDelta(self.calls[wire_index], function["arguments"]))

    def _end_calls(self, events: list[StreamEvent]) -> None:
        events.extend(ToolCallEnd(index) for index in self.open_calls)
        self.open_calls.clear()


def _in_stream_error(error: Any) -> ProxyError:
    if not isinstance(error, dict):
        return ProxyError(502, str(error))
    kind = _KIND_BY_TYPE.get(str(error.get("type")), "internal")
    code = error.get("code")
    status = code if isinstance(code, int) else status_for_kind(kind)
    return ProxyError(
        status, str(error.get("message") or "upstream error"), code=code if isinstance(code, str) else None
    )


# ---------------------------------------------------------------- the codec


class OpenAICodec(Codec):
    protocol = "openai"
    path_roots = ("/v1",)
    routes = (
        Route("POST", r"/v1/chat/completions", "generate"),
        Route("POST", r"/v1/embeddings", "embed"),
        Route("GET", r"/v1/models", "list_models"),
        Route("GET", r"/v1/models/(?P<model>.+)", "get_model"),
    )
    forwarded_headers = ("openai-beta",)
    document_types = frozenset({"application/pdf"})

    # ------------------------------------------------------------ client side

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
            message["tool_calls"] = _wire_calls(calls)
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
            "usage": _usage_json(response.usage),
        }

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return _ChunkEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return _error_body(error)

    # ------------------------------------------------------------ upstream side

    def upstream_path(self, model: str, stream: bool) -> str:
        return "/chat/completions"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": _encode_messages(request)}
        if request.tools and not (request.tool_choice and request.tool_choice.mode == "none"):
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
                }
                for t in request.tools
            ]
            choice = request.tool_choice
            if choice is not None and choice.mode != "auto":
                body["tool_choice"] = (
                    {"type": "function", "function": {"name": choice.name}} if choice.mode == "tool" else "required"
                )
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.max_tokens is not None:
            body["max_completion_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = min(max(request.temperature, 0.0), 2.0)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = request.stop[:4]
        for name in ("seed", "presence_penalty", "frequency_penalty"):
            if getattr(request, name) is not None:
                body[name] = getattr(request, name)
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif fmt is not None and fmt.type == "json_schema":
            spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema_ or {}}
            if fmt.strict is not None:
                spec["strict"] = fmt.strict
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        reasoning = request.reasoning
        if reasoning is not None and reasoning.enabled:
            effort = reasoning.effort if reasoning.effort and reasoning.effort != "none" else None
            body["reasoning_effort"] = effort or budget_to_effort(reasoning.budget_tokens)
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def decode_response(self, body: Any) -> Response:
        if not isinstance(body, dict) or not body.get("choices"):
            raise ProxyError(502, "the upstream answer has no choices")
        choice = body["choices"][0]
        message = choice.get("message") or {}
        content: list[Any] = []
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning:
            content.append(Thinking(text=reasoning, origin="openai"))
        if message.get("content"):
            content.append(Text(text=message["content"]))
        elif message.get("refusal"):
            content.append(Text(text=message["refusal"]))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            content.append(
                ToolCall(
                    id=call.get("id") or new_call_id(),
                    name=function.get("name", ""),
                    arguments=_arguments(function.get("arguments")),
                    origin="openai",
                )
            )
        stop = _FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn")
        if stop == "end_turn" and any(isinstance(p, ToolCall) for p in content):
            stop = "tool_use"
        return Response(
            id=body.get("id"),
            model=body.get("model"),
            content=content,
            stop_reason=stop,
            usage=_usage_from(body.get("usage")),
        )

    def stream_decoder(self) -> StreamDecoder:
        return _ChunkDecoder()

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        parsed, message = upstream_error_body(body, status)
        code = param = None
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else {}
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code") if isinstance(error.get("code"), str) else None
            param = error.get("param")
        elif isinstance(error, str):
            message = error
        return ProxyError(status, message, code=code, param=param, retry_after=retry_after(headers))

    # ------------------------------------------------------------ models

    def encode_model_list(self, names: list[str]) -> dict[str, Any]:
        return {"object": "list", "data": [self.encode_model(name) for name in names]}

    def encode_model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "ccproxy"}

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

    def embed_path(self, model: str) -> str | None:
        return "/embeddings"

    def encode_embed_request(self, request: EmbedRequest, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": request.inputs, "encoding_format": "float"}
        if request.dimensions:
            body["dimensions"] = request.dimensions
        return body

    def decode_embed_response(self, body: Any) -> EmbedResponse:
        data = sorted(body.get("data") or [], key=lambda d: d.get("index", 0))
        return EmbedResponse(
            model=body.get("model"),
            vectors=[d["embedding"] for d in data],
            input_tokens=(body.get("usage") or {}).get("prompt_tokens"),
        )


# ---------------------------------------------------------------- upstream request encoding


def _encode_messages(request: Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "assistant":
            out.append(_assistant(message))
            continue
        if message.role == "system":
            out.append({"role": "system", "content": text_of(message.content)})
            continue
        results = [p for p in message.content if isinstance(p, ToolResult)]
        for result in results:
            text = text_of(result.content)
            if result.is_error:
                text = "Error: " + text
            out.append({"role": "tool", "tool_call_id": for_openai(result.id), "content": text})
        # Images and files returned by tools travel in a user message: tool
        # messages take text only.
        others = [p for p in message.content if not isinstance(p, ToolResult)]
        others += [p for r in results for p in r.content if not isinstance(p, Text)]
        if others:
            out.append({"role": "user", "content": _user_content(others)})
    return out


def _user_content(parts: list[Any]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, Text) for p in parts):
        return "".join(p.text for p in parts)
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text) and part.text:
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            content.append({"type": "image_url", "image_url": {"url": data_url(part)}})
        elif isinstance(part, Document):
            content.append(_file_part(part))
    return content


def _file_part(document: Document) -> dict[str, Any]:
    if document.text is not None:
        return {"type": "text", "text": document_text(document)}
    spec = {
        "file_data": f"data:{document.media_type};base64,{document.data or ''}",
        "filename": document.title or "document.pdf",
    }
    return {"type": "file", "file": spec}


def _wire_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls as an assistant message carries them, in an answer or in history."""
    return [
        {"id": for_openai(c.id), "type": "function", "function": {"name": c.name, "arguments": dumps(c.arguments)}}
        for c in calls
    ]


def _assistant(message: Message) -> dict[str, Any]:
    text = "".join(
        p.text if isinstance(p, Text) else server_tool_text(p)
        for p in message.content
        if isinstance(p, (Text, ServerToolUse))
    )
    calls = [p for p in message.content if isinstance(p, ToolCall)]
    out: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    # An OpenAI-protocol reasoner (DeepSeek) requires its reasoning_content
    # back on tool-call turns. Unsigned thinking a client sends back came from
    # such a reasoner too (a signed one belongs to its own vendor).
    reasoning = "".join(
        p.text
        for p in message.content
        if isinstance(p, Thinking) and not p.redacted and (p.origin == "openai" or not p.signature)
    )
    if reasoning:
        out["reasoning_content"] = reasoning
    if calls:
        out["tool_calls"] = _wire_calls(calls)
    return out
