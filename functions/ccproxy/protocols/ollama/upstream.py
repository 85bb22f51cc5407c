"""Ollama's native API as the proxy speaks it to an Ollama server: unified
requests encoded for /api/chat, its answers (whole or NDJSON lines) and
errors decoded back."""

from __future__ import annotations

import enum
from typing import Any, Mapping

from ...errors import ProxyError
from ...framing import NDJSONDecoder
from ...ids import new_call_id
from ...jsonutil import dumps
from ...unified import (
    EmbedRequest,
    EmbedResponse,
    Finish,
    Image,
    Message,
    Request,
    Response,
    ResponseFormat,
    Start,
    StopReason,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    Usage,
    UsageUpdate,
)
from ..base import RecordDecoder, StreamDecoder, UpstreamCodec
from ..common import as_text_parts, call_names, fold_system_turns, retry_after, text_of, upstream_error_body
from .wire import STREAM_MEDIA_TYPE, arguments_of, wire_call

# ---------------------------------------------------------------- mappings


def _stop_from_wire(reason: str | None, called: bool) -> StopReason:
    if reason == "length":
        return "max_tokens"
    return "tool_use" if called else "end_turn"


def _usage_from(body: dict[str, Any]) -> Usage:
    return Usage(input_tokens=body.get("prompt_eval_count"), output_tokens=body.get("eval_count"))


# ---------------------------------------------------------------- request encoding


def _encode_assistant(message: Message) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": "assistant", "content": text_of(message.content)}
    thinking = "".join(p.text for p in message.content if isinstance(p, Thinking) and p.origin == "ollama")
    if thinking:
        entry["thinking"] = thinking
    calls = [p for p in message.content if isinstance(p, ToolCall)]
    if calls:
        entry["tool_calls"] = [wire_call(i, c.id, c.name, c.arguments) for i, c in enumerate(calls)]
    return entry


def _encode_tool_results(message: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for result in (p for p in message.content if isinstance(p, ToolResult)):
        text = text_of(result.content)
        entry: dict[str, Any] = {
            "role": "tool",
            "content": ("Error: " + text) if result.is_error else text,
            "tool_name": result.name or names.get(result.id, ""),
            "tool_call_id": result.id,
        }
        images = [p.data for p in result.content if isinstance(p, Image) and p.data]
        if images:
            entry["images"] = images
        out.append(entry)
    return out


def _encode_user(message: Message) -> dict[str, Any] | None:
    others = [p for p in message.content if isinstance(p, (Text, Image))]
    if not others:
        return None
    # Separate blocks (a reminder and the prompt, injected text) stay apart, as on OpenAI upstreams.
    text = "\n\n".join(p.text for p in others if isinstance(p, Text) and p.text)
    entry: dict[str, Any] = {"role": "user", "content": text}
    images = [p.data for p in others if isinstance(p, Image) and p.data]
    if images:
        entry["images"] = images
    return entry


def _encode_messages(request: Request) -> list[dict[str, Any]]:
    request = fold_system_turns(request)
    names = call_names(request.messages)
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for message in request.messages:
        message = message.model_copy(update={"content": as_text_parts(message.content)})
        if message.role == "assistant":
            out.append(_encode_assistant(message))
            continue
        out += _encode_tool_results(message, names)
        user = _encode_user(message)
        if user is not None:
            out.append(user)
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


def _encode_format(fmt: ResponseFormat | None) -> str | dict[str, Any] | None:
    if fmt is not None and fmt.type == "json_object":
        return "json"
    if fmt is not None and fmt.type == "json_schema" and fmt.schema_:
        return fmt.schema_
    return None


# ---------------------------------------------------------------- stream decoder


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
        done = body.get("done")
        if done is not None and type(done) is not bool:
            # Passed on as it came, a line whose `done` is not true or false ends no client's stream.
            raise ProxyError(502, f"the upstream's stream line has done = {type(done).__name__}, not true or false")
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
            self._call(call, events)
        if done:
            events.append(UsageUpdate(_usage_from(body)))
            events.append(Finish(_stop_from_wire(body.get("done_reason"), self.calls > 0)))
            self.state = _DecoderState.DONE

    def _call(self, call: dict[str, Any], events: list[StreamEvent]) -> None:
        """A whole tool call, as Ollama streams them, as its three events."""
        function = call.get("function") or {}
        index = self.calls
        self.calls += 1
        events.append(ToolCallStart(index, call.get("id") or new_call_id(), function.get("name", ""), origin="ollama"))
        events.append(ToolCallDelta(index, dumps(arguments_of(function.get("arguments")))))
        events.append(ToolCallEnd(index))


# ---------------------------------------------------------------- the upstream half


class OllamaUpstream(UpstreamCodec):
    protocol = "ollama"
    stream_media_type = STREAM_MEDIA_TYPE
    needs_inline_images = True

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
        fmt = _encode_format(request.response_format)
        if fmt is not None:
            body["format"] = fmt
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
                    arguments=arguments_of(function.get("arguments")),
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

    # ------------------------------------------------------------ embeddings

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
