"""OpenAI chat completions as the proxy speaks it to an upstream server: a
unified request encoded as a chat completions body, and the upstream's
answers, chunk streams and errors decoded into the unified form."""

from __future__ import annotations

import enum
from typing import Any, Mapping

from ...errors import ProxyError, status_for_kind
from ...framing import SSEDecoder, SSEEvent, parse_json_data
from ...ids import for_openai, new_call_id
from ...unified import (
    Document,
    EmbedRequest,
    EmbedResponse,
    Finish,
    Image,
    Message,
    Request,
    Response,
    ResponseFormat,
    ServerToolUse,
    Start,
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
    UsageUpdate,
)
from ..base import RecordDecoder, StreamDecoder, UpstreamCodec
from ..common import (
    budget_to_effort,
    data_url,
    document_text,
    server_tool_text,
    text_of,
)
from .wire import FINISH_TO_STOP, KIND_BY_TYPE, call_arguments, read_error, usage_from, wire_calls

# ---------------------------------------------------------------- request encoding


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
        # One string, as every OpenAI-compatible server takes it; separate
        # blocks (a reminder and the prompt, two user turns) stay apart.
        if len(parts) == 1:
            return parts[0].text
        return "\n\n".join(p.text for p in parts if p.text)
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
        out["tool_calls"] = wire_calls(calls)
    return out


def _encode_tools(request: Request) -> dict[str, Any]:
    """The tools, tool_choice and parallel_tool_calls fields, in that order."""
    fields: dict[str, Any] = {
        "tools": [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
            }
            for t in request.tools
        ]
    }
    choice = request.tool_choice
    if choice is not None and choice.mode != "auto":
        fields["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}} if choice.mode == "tool" else "required"
        )
    if request.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    return fields


def _encode_response_format(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is not None and fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt is not None and fmt.type == "json_schema":
        spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema_ or {}}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        return {"type": "json_schema", "json_schema": spec}
    return None


# ---------------------------------------------------------------- stream decoder


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
                stop = FINISH_TO_STOP.get(reason, "end_turn")
                if stop == "end_turn" and self.calls:
                    stop = "tool_use"
                events.append(Finish(stop))
                self.state = _DecoderState.FINISHED
        if body.get("usage"):
            events.append(UsageUpdate(usage_from(body["usage"])))

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
    kind = KIND_BY_TYPE.get(str(error.get("type")), "internal")
    code = error.get("code")
    status = code if isinstance(code, int) else status_for_kind(kind)
    return ProxyError(
        status, str(error.get("message") or "upstream error"), code=code if isinstance(code, str) else None
    )


# ---------------------------------------------------------------- the upstream half


class OpenAIUpstream(UpstreamCodec):
    protocol = "openai"
    forwarded_headers = ("openai-beta",)
    stream_end = b"data: [DONE]"
    stream_end_mark = b"[DONE]"
    document_types = frozenset({"application/pdf"})

    def upstream_path(self, model: str, stream: bool) -> str:
        return "/chat/completions"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": _encode_messages(request)}
        if request.tools and not (request.tool_choice and request.tool_choice.mode == "none"):
            body.update(_encode_tools(request))
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
        response_format = _encode_response_format(request.response_format)
        if response_format is not None:
            body["response_format"] = response_format
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
                    arguments=call_arguments(function.get("arguments")),
                    origin="openai",
                )
            )
        stop = FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn")
        if stop == "end_turn" and any(isinstance(p, ToolCall) for p in content):
            stop = "tool_use"
        return Response(
            id=body.get("id"),
            model=body.get("model"),
            content=content,
            stop_reason=stop,
            usage=usage_from(body.get("usage")),
        )

    def stream_decoder(self) -> StreamDecoder:
        return _ChunkDecoder()

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        return read_error(status, body, headers)

    # ------------------------------------------------------------ embeddings

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
