"""Gemini as the proxy speaks it to an upstream: unified requests encoded as
generateContent (and countTokens, batchEmbedContents) bodies, and the
upstream's answers, streams and errors decoded into the unified form."""

from __future__ import annotations

import enum
from typing import Any, Mapping

from ...errors import ProxyError, kind_for_status
from ...framing import SSEDecoder, SSEEvent, parse_json_data
from ...ids import new_call_id
from ...jsonutil import dumps, loads
from ...unified import (
    Document,
    EmbedRequest,
    EmbedResponse,
    Finish,
    Image,
    Message,
    Request,
    Response,
    ServerTool,
    ServerToolRun,
    ServerToolUse,
    Start,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ThinkingSignature,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    UsageUpdate,
)
from ..base import RecordDecoder, StreamDecoder, UpstreamCodec
from ..common import (
    call_names,
    document_text,
    effort_to_budget,
    fold_system_turns,
    retry_after,
    server_tool_text,
    text_of,
    upstream_error_body,
)
from .schema import has_properties, to_gemini
from .wire import (
    _SERVER_TOOL_KEYS,
    SKIP_SIGNATURE,
    _get,
    _grounding,
    _stop_from_wire,
    _usage_from,
)

# ---------------------------------------------------------------- request encoding


def _contents(request: Request) -> list[dict[str, Any]]:
    names = call_names(request.messages)
    contents: list[dict[str, Any]] = []
    for message in request.messages:
        role = "model" if message.role == "assistant" else "user"
        parts = _message_parts(message, names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _message_parts(message: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    """One message's parts; a thought signature rides on the next text or
    call part, and a tool result's images and documents follow the results."""
    parts: list[dict[str, Any]] = []
    trailing: list[dict[str, Any]] = []
    signature: str | None = None
    first_call = True
    for part in message.content:
        if isinstance(part, Text):
            if part.text:
                parts.append({"text": part.text})
                if signature:
                    parts[-1]["thoughtSignature"], signature = signature, None
        elif isinstance(part, Image):
            parts.append(_image_part(part))
        elif isinstance(part, Document):
            parts.append(_document_part(part))
        elif isinstance(part, ServerToolUse):
            parts.append({"text": server_tool_text(part)})
        elif isinstance(part, Thinking):
            if part.origin == "gemini" and part.signature and not part.redacted:
                signature = part.signature
        elif isinstance(part, ToolCall):
            parts.append(_signed_call(part, signature, first_call))
            signature, first_call = None, False
        elif isinstance(part, ToolResult):
            parts.append(_response_part(part, names))
            trailing.extend(
                _image_part(p) if isinstance(p, Image) else _document_part(p)
                for p in part.content
                if isinstance(p, (Image, Document))
            )
    parts.extend(trailing)
    return parts


def _signed_call(part: ToolCall, signature: str | None, first_call: bool) -> dict[str, Any]:
    call: dict[str, Any] = {"functionCall": {"id": part.id, "name": part.name, "args": part.arguments}}
    own = part.signature if part.origin == "gemini" else None
    chosen = own or signature or (SKIP_SIGNATURE if first_call else None)
    if chosen:
        call["thoughtSignature"] = chosen
    return call


def _image_part(image: Image) -> dict[str, Any]:
    if image.data is not None:
        return {"inlineData": {"mimeType": image.media_type or "image/png", "data": image.data}}
    return {"fileData": {"mimeType": image.media_type or "image/png", "fileUri": image.url or ""}}


def _document_part(document: Document) -> dict[str, Any]:
    if document.text is not None:
        return {"text": document_text(document)}
    if document.data is not None:
        return {"inlineData": {"mimeType": document.media_type, "data": document.data}}
    return {"fileData": {"mimeType": document.media_type, "fileUri": document.url or ""}}


def _response_part(result: ToolResult, names: dict[str, str]) -> dict[str, Any]:
    text = text_of(result.content)
    if result.is_error:
        response: dict[str, Any] = {"error": text}
    else:
        parsed = None
        if text.startswith("{"):
            try:
                parsed = loads(text)
            except ValueError:
                parsed = None
        response = parsed if isinstance(parsed, dict) else {"output": text}
    name = result.name or names.get(result.id)
    if not name:
        raise ProxyError(
            400, f"tool result {result.id!r} answers no tool call in the conversation; Gemini needs the tool's name"
        )
    return {"functionResponse": {"id": result.id, "name": name, "response": response}}


def _usable_server_tools(request: Request) -> list[ServerTool]:
    """Gemini's own tools run only in a request without function
    declarations (the API refuses the mix on most models)."""
    if request.tools:
        return []
    return [t for t in request.server_tools if t.kind in _SERVER_TOOL_KEYS]


def _tools(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {}
    server: list[dict[str, Any]] = [{_SERVER_TOOL_KEYS[t.kind]: {}} for t in _usable_server_tools(request)]
    if server:
        body["tools"] = server
    if not request.tools:
        return body
    declarations = []
    for tool in request.tools:
        declaration: dict[str, Any] = {"name": tool.name, "description": tool.description or ""}
        parameters = to_gemini(tool.parameters)
        if has_properties(parameters):
            declaration["parameters"] = parameters
        declarations.append(declaration)
    body["tools"] = [{"functionDeclarations": declarations}]
    choice = request.tool_choice
    if choice is not None and choice.mode != "auto":
        config: dict[str, Any] = {"mode": {"any": "ANY", "tool": "ANY", "none": "NONE"}[choice.mode]}
        if choice.mode == "tool" and choice.name:
            config["allowedFunctionNames"] = [choice.name]
        body["toolConfig"] = {"functionCallingConfig": config}
    return body


def _generation_config(request: Request) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = min(max(request.temperature, 0.0), 2.0)
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.top_k is not None:
        config["topK"] = request.top_k
    if request.stop:
        config["stopSequences"] = request.stop[:5]
    if request.seed is not None:
        config["seed"] = request.seed
    if request.presence_penalty is not None:
        config["presencePenalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        config["frequencyPenalty"] = request.frequency_penalty
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema_:
            config["responseSchema"] = to_gemini(fmt.schema_)
    reasoning = request.reasoning
    if reasoning is not None and reasoning.enabled is not None:
        if reasoning.enabled:
            budget = reasoning.budget_tokens or effort_to_budget(reasoning.effort)
            config["thinkingConfig"] = {"includeThoughts": reasoning.include_thoughts, "thinkingBudget": budget}
        else:
            config["thinkingConfig"] = {"thinkingBudget": 0}
    return config


# ---------------------------------------------------------------- answers and errors


def _answer_content(candidate: dict[str, Any]) -> list[Any]:
    content: list[Any] = []
    for part in _get(candidate.get("content"), "parts") or []:
        signature = _get(part, "thoughtSignature")
        call = _get(part, "functionCall")
        if call is not None:
            content.append(
                ToolCall(
                    id=call.get("id") or new_call_id(),
                    name=call.get("name", ""),
                    arguments=call.get("args") or {},
                    signature=signature,
                    origin="gemini",
                )
            )
        elif part.get("thought"):
            content.append(Thinking(text=part.get("text", ""), signature=signature, origin="gemini"))
        else:
            if signature:
                content.append(Thinking(signature=signature, origin="gemini"))
            if part.get("text"):
                content.append(Text(text=part["text"]))
    search = _grounding(candidate)
    if search is not None:
        content.insert(0, search)  # the search came before the answer that cites it
    return content


_BAD_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


def _error_from(body: Any, status: int) -> ProxyError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ProxyError(status, f"upstream error {status}")
    retry, code = None, error.get("status") if isinstance(error.get("status"), str) else None
    for detail in error.get("details") or []:
        kind = str(detail.get("@type", ""))
        if kind.endswith("ErrorInfo") and detail.get("reason") in _BAD_KEY_REASONS:
            # Gemini answers a bad key with 400 INVALID_ARGUMENT: said as the
            # 401 it is, the key is cooled and the next one tried.
            return ProxyError(
                401, str(error.get("message") or "API key not valid"), kind="authentication", code=str(detail["reason"])
            )
        if kind.endswith("RetryInfo"):
            delay = str(detail.get("retryDelay", "")).rstrip("s")
            try:
                retry = float(delay)
            except ValueError:
                pass
        elif kind.endswith("QuotaFailure"):
            quota = " ".join(str(v.get("quotaId", "")) for v in detail.get("violations") or [])
            if "PerDay" in quota:
                code = "quota_per_day"
            elif "PerMinute" in quota:
                code = "quota_per_minute"
    http_status = status if isinstance(status, int) and status >= 400 else 500
    return ProxyError(
        http_status,
        str(error.get("message") or f"upstream error {status}"),
        kind=kind_for_status(http_status),
        code=code,
        retry_after=retry,
    )


# ---------------------------------------------------------------- stream decoder


class _DecoderState(enum.Enum):
    WAITING = "waiting"  # no chunk yet
    STREAMING = "streaming"  # chunks arriving
    FINISHED = "finished"  # a finishReason seen
    FAILED = "failed"  # an error record seen


class _ChunkDecoder(RecordDecoder):
    def __init__(self) -> None:
        super().__init__(SSEDecoder())
        self.state = _DecoderState.WAITING
        self.calls = 0
        self.usage: Any = None  # the last usageMetadata passed on
        self.searched = False  # grounding metadata passed on already

    def _ended(self) -> bool:
        return self.state not in (_DecoderState.WAITING, _DecoderState.STREAMING)

    def _record(self, record: SSEEvent, events: list[StreamEvent]) -> None:
        data = record.data
        if not data or self.state is _DecoderState.FAILED:
            return
        body = parse_json_data(data)
        if not isinstance(body, dict):
            return
        if "error" in body:
            events.append(StreamError(_error_from(body, body.get("error", {}).get("code") or 500)))
            self.state = _DecoderState.FAILED
            return
        if self.state is _DecoderState.WAITING:
            events.append(Start(id=_get(body, "responseId"), model=_get(body, "modelVersion")))
            self.state = _DecoderState.STREAMING
        candidates = body.get("candidates") or []
        candidate = candidates[0] if candidates else {}
        for part in _get(candidate.get("content"), "parts") or []:
            self._part(part, events)
        search = None if self.searched else _grounding(candidate)
        if search is not None:
            self.searched = True
            events.append(ServerToolRun(search))
        meta = _get(body, "usageMetadata")
        if meta and meta != self.usage:  # Gemini repeats it on every chunk
            self.usage = meta
            events.append(UsageUpdate(_usage_from(meta)))
        finish = _get(candidate, "finishReason")
        blocked = _get(_get(body, "promptFeedback"), "blockReason")
        if finish or blocked:
            events.append(Finish("refusal" if blocked else _stop_from_wire(finish, self.calls > 0)))
            self.state = _DecoderState.FINISHED

    def _part(self, part: dict[str, Any], events: list[StreamEvent]) -> None:
        signature = _get(part, "thoughtSignature")
        call = _get(part, "functionCall")
        if call is not None:
            index = self.calls
            self.calls += 1
            events.append(
                ToolCallStart(
                    index, call.get("id") or new_call_id(), call.get("name", ""), signature=signature, origin="gemini"
                )
            )
            events.append(ToolCallDelta(index, dumps(call.get("args") or {})))
            events.append(ToolCallEnd(index))
        elif part.get("thought"):
            if part.get("text"):
                events.append(ThinkingDelta(part["text"]))
            if signature:
                events.append(ThinkingSignature(signature, origin="gemini"))
        else:
            if signature:
                events.append(ThinkingSignature(signature, origin="gemini"))
            if part.get("text"):
                events.append(TextDelta(part["text"]))


# ---------------------------------------------------------------- the upstream half


class GeminiUpstream(UpstreamCodec):
    protocol = "gemini"
    server_tools = frozenset(_SERVER_TOOL_KEYS)
    document_types = frozenset({"application/pdf", "text/plain"})
    needs_inline_images = True
    model_key = "modelVersion"

    def left_out(self, request: Request) -> list[str]:
        usable = _usable_server_tools(request)
        return [
            f"server tool {t.name} ({t.kind})" + (" beside function tools" if t.kind in self.server_tools else "")
            for t in request.server_tools
            if t not in usable
        ] + [f"beta {beta}" for beta in request.betas]

    def upstream_path(self, model: str, stream: bool) -> str:
        if stream:
            return f"/models/{model}:streamGenerateContent?alt=sse"
        return f"/models/{model}:generateContent"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        request = fold_system_turns(request)
        body: dict[str, Any] = {"contents": _contents(request)}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        body.update(_tools(request))
        config = _generation_config(request)
        if config:
            body["generationConfig"] = config
        return body

    def passthrough_body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        """The body as it came (the model is in the path), except that a
        model turn whose calls carry no thought signature (history a client
        rebuilt, or another model's) gets the sentinel Gemini 3 requires."""
        for content in body.get("contents") or []:
            if not isinstance(content, dict) or content.get("role") != "model":
                continue
            calls = [
                p for p in content.get("parts") or [] if isinstance(p, dict) and _get(p, "functionCall") is not None
            ]
            if calls and not any(_get(p, "thoughtSignature") for p in calls):
                calls[0]["thoughtSignature"] = SKIP_SIGNATURE
        return body

    def decode_response(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ProxyError(502, "the upstream answer is not a JSON object")
        candidates = body.get("candidates") or []
        candidate = candidates[0] if candidates else {}
        content = _answer_content(candidate)
        called = any(isinstance(p, ToolCall) for p in content)
        blocked = _get(_get(body, "promptFeedback"), "blockReason")
        stop = "refusal" if blocked else _stop_from_wire(_get(candidate, "finishReason"), called)
        return Response(
            id=_get(body, "responseId"),
            model=_get(body, "modelVersion"),
            content=content,
            stop_reason=stop,
            usage=_usage_from(_get(body, "usageMetadata")),
        )

    def stream_decoder(self) -> StreamDecoder:
        return _ChunkDecoder()

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        parsed, message = upstream_error_body(body, status)
        if parsed is None:
            return ProxyError(status, message)
        error = _error_from(parsed, status)
        if error.kind != "authentication":
            error.status = status
        if error.retry_after is None:
            error.retry_after = retry_after(headers)
        return error

    # ------------------------------------------------------------ count tokens

    def count_path(self, model: str) -> str | None:
        return f"/models/{model}:countTokens"

    def encode_count_request(self, request: Request, model: str) -> dict[str, Any]:
        inner = self.encode_request(request.model_copy(update={"stream": False}), model)
        inner.pop("generationConfig", None)
        return {"generateContentRequest": {"model": f"models/{model}", **inner}}

    def decode_count_response(self, body: Any) -> int:
        return int(_get(body, "totalTokens") or 0)

    # ------------------------------------------------------------ embeddings

    def embed_path(self, model: str) -> str | None:
        return f"/models/{model}:batchEmbedContents"

    def encode_embed_request(self, request: EmbedRequest, model: str) -> dict[str, Any]:
        requests = []
        for text in request.inputs:
            entry: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
            if request.dimensions:
                entry["outputDimensionality"] = request.dimensions
            requests.append(entry)
        return {"requests": requests}

    def decode_embed_response(self, body: Any) -> EmbedResponse:
        return EmbedResponse(vectors=[e.get("values", []) for e in body.get("embeddings") or []])
