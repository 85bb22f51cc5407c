"""Gemini as clients speak it: generateContent (whole and streamed),
countTokens, embedContent and the model list, decoded into the unified form
and answered back in Gemini's shape."""

from __future__ import annotations

import base64
import enum
from typing import Any

from ...errors import ProxyError
from ...ids import new_call_id
from ...jsonutil import dumpb, dumps, loads_object
from ...unified import (
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
from ..common import pair_tool_results
from .schema import from_gemini
from .wire import (
    _SENTINELS,
    _SERVER_TOOLS,
    _STANDARD_BASE64,
    _STATUS_NAMES,
    _STOP_TO_WIRE,
    _get,
    _grounding_json,
    _snake,
    _usage_json,
)

# ---------------------------------------------------------------- request decoding


def _bad(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, param=param)


def _decode_contents(contents: Any) -> list[Message]:
    if not isinstance(contents, list) or not contents:
        raise _bad("contents: give a non-empty list of contents", "contents")
    messages: list[Message] = []
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise _bad(f"contents[{i}]: each content must be an object", f"contents[{i}]")
        role = content.get("role") or "user"
        if role not in ("user", "model", "function", "tool"):
            raise _bad(f"contents[{i}].role: {role!r} is not user or model", f"contents[{i}].role")
        unified_role: Role = "assistant" if role == "model" else "user"
        parts = _decode_parts(content.get("parts") or [], f"contents[{i}]")
        if not parts:
            continue
        if messages and messages[-1].role == unified_role:
            messages[-1].content.extend(parts)
        else:
            messages.append(Message(role=unified_role, content=parts))
    pair_tool_results(messages)
    return messages


def _decode_parts(parts: Any, where: str) -> list[Any]:
    if not isinstance(parts, list):
        raise _bad(f"{where}.parts: must be a list", f"{where}.parts")
    out: list[Any] = []
    for j, part in enumerate(parts):
        here = f"{where}.parts[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"{here}: each part must be an object", here)
        out.extend(_decode_part(part, here))
    for part in out:
        if isinstance(part, ToolCall) and not part.id:
            part.id = new_call_id()
    return out


def _decode_part(part: dict[str, Any], here: str) -> list[Any]:
    """One Gemini part as the unified parts it holds (a signed text part is
    two: the signature, then the text)."""
    signature = _get(part, "thoughtSignature")
    call = _get(part, "functionCall")
    response = _get(part, "functionResponse")
    inline = _get(part, "inlineData")
    file = _get(part, "fileData")
    if call is not None:
        return [_decode_call(call, signature, here)]
    if response is not None:
        return [_tool_result(response, here)]
    if inline is not None:
        return [_inline_part(inline, here)]
    if file is not None:
        return [_file_part(file)]
    if "text" in part:
        return _text_part(part, signature)
    if signature:
        return [Thinking(signature=signature, origin="gemini")]
    raise _bad(
        f"{here}: this part holds nothing ccproxy can convert (text, inlineData, fileData, "
        "functionCall, functionResponse)",
        here,
    )


def _decode_call(call: dict[str, Any], signature: Any, here: str) -> ToolCall:
    args = call.get("args") or {}
    if not isinstance(args, dict):
        raise _bad(f"{here}.functionCall.args: must be an object", here)
    return ToolCall(
        id=call.get("id") or "",
        name=call.get("name", ""),
        arguments=args,
        signature=signature if signature not in _SENTINELS else None,
        origin="gemini" if signature else None,
    )


def _file_part(file: Any) -> Image | Document:
    media_type = _get(file, "mimeType")
    if isinstance(media_type, str) and not media_type.startswith("image/"):
        return Document(media_type=media_type, url=_get(file, "fileUri"))
    return Image(media_type=media_type, url=_get(file, "fileUri"))


def _text_part(part: dict[str, Any], signature: Any) -> list[Any]:
    if part.get("thought"):
        return [Thinking(text=part["text"] or "", signature=signature, origin="gemini")]
    out: list[Any] = []
    if signature and signature not in _SENTINELS:
        out.append(Thinking(signature=signature, origin="gemini"))
    out.append(Text(text=part["text"] or ""))
    return out


def _inline_part(inline: Any, where: str) -> Image | Document:
    if not isinstance(inline, dict) or not isinstance(inline.get("data"), str):
        raise _bad(f"{where}.inlineData: give mimeType and base64 data", where)
    media_type = _get(inline, "mimeType")
    # The SDK sends bytes in the URL-safe alphabet, which Google reads and
    # other vendors refuse: standard base64 from here on.
    data = inline["data"].translate(_STANDARD_BASE64)
    if not isinstance(media_type, str) or media_type.startswith("image/"):
        return Image(media_type=media_type, data=data)
    if media_type.startswith("text/"):
        try:
            return Document(media_type="text/plain", text=base64.b64decode(data).decode("utf-8"))
        except ValueError:
            raise _bad(f"{where}.inlineData.data: not base64 UTF-8 text", where) from None
    return Document(media_type=media_type, data=data)


def _tool_result(response: dict[str, Any], where: str) -> ToolResult:
    if not response.get("name"):
        raise _bad(f"{where}.functionResponse.name: required", where)
    body = response.get("response")
    is_error = False
    if (
        isinstance(body, dict)
        and set(body) <= {"output", "result"}
        and isinstance(body.get("output", body.get("result")), str)
    ):
        text = body.get("output", body.get("result"))
    elif isinstance(body, dict) and set(body) == {"error"}:
        is_error = True
        text = body["error"] if isinstance(body["error"], str) else dumps(body["error"])
    else:
        text = dumps(body if body is not None else {})
    content: list[Any] = [Text(text=str(text))]
    for k, inner in enumerate(response.get("parts") or []):
        inline = _get(inner, "inlineData") if isinstance(inner, dict) else None
        if inline:
            content.append(_inline_part(inline, f"{where}.functionResponse.parts[{k}]"))
    return ToolResult(id=response.get("id") or "", name=response["name"], content=content, is_error=is_error)


def _decode_server_tools(tools: Any) -> list[ServerTool]:
    out = []
    for entry in tools or []:
        for key, kind in _SERVER_TOOLS.items():
            options = _get(entry, key)
            if options is not None:
                out.append(
                    ServerTool(kind=kind, name=_snake(key), options=options if isinstance(options, dict) else {})
                )
    return out


def _decode_tools(tools: Any) -> list[Tool]:
    if tools is not None and not isinstance(tools, list):
        raise _bad("tools: must be a list", "tools")
    out = []
    for entry in tools or []:
        for declaration in _get(entry, "functionDeclarations") or []:
            schema = _get(declaration, "parametersJsonSchema")
            if schema is None:
                schema = from_gemini(declaration.get("parameters")) if declaration.get("parameters") else None
            out.append(
                Tool(
                    name=declaration.get("name", ""),
                    description=declaration.get("description"),
                    parameters=schema or {"type": "object", "properties": {}},
                )
            )
    return out


def _decode_tool_choice(config: Any) -> ToolChoice | None:
    calling = _get(_get(config, "functionCallingConfig"), "mode")
    if not calling:
        return None
    allowed = _get(_get(config, "functionCallingConfig"), "allowedFunctionNames") or []
    mode = str(calling).upper()
    if mode == "NONE":
        return ToolChoice(mode="none")
    if mode == "ANY":
        return ToolChoice(mode="tool", name=allowed[0]) if len(allowed) == 1 else ToolChoice(mode="any")
    return ToolChoice(mode="auto")


def _decode_reasoning(generation: dict[str, Any]) -> Reasoning | None:
    config = _get(generation, "thinkingConfig")
    if not isinstance(config, dict):
        return None
    budget = _get(config, "thinkingBudget")
    level = _get(config, "thinkingLevel")
    include = bool(_get(config, "includeThoughts", False))
    if budget == 0:
        return Reasoning(enabled=False, include_thoughts=False)
    return Reasoning(
        enabled=True if (budget or level or include) else None,
        budget_tokens=budget if isinstance(budget, int) and budget > 0 else None,
        effort=str(level).lower() if level else None,
        include_thoughts=include,
    )


def _decode_format(generation: dict[str, Any]) -> ResponseFormat | None:
    if _get(generation, "responseMimeType") != "application/json":
        return None
    # Gemini reads type names in either case (Gemini CLI writes "OBJECT" even
    # in responseJsonSchema); JSON Schema elsewhere knows only lower case.
    schema = _get(generation, "responseJsonSchema")
    if schema is None:
        schema = _get(generation, "responseSchema")
    schema = from_gemini(schema) if schema is not None else None
    return ResponseFormat(type="json_schema", schema=schema) if schema else ResponseFormat(type="json_object")


def _decode_system(system: Any) -> str | None:
    if isinstance(system, dict):
        return (
            "\n\n".join(p.get("text", "") for p in system.get("parts") or [] if isinstance(p, dict) and p.get("text"))
            or None
        )
    if isinstance(system, str):
        return system or None
    return None


def _decode_request(body: Any, model: str, stream: bool) -> Request:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    generation = _get(body, "generationConfig") or {}
    if (_get(generation, "candidateCount") or 1) != 1:
        raise _bad(
            "generationConfig.candidateCount: ccproxy returns one candidate; send 1", "generationConfig.candidateCount"
        )
    system_text = _decode_system(_get(body, "systemInstruction"))
    reasoning = _decode_reasoning(generation)
    return Request(
        model=model,
        system=system_text,
        messages=_decode_contents(body.get("contents")),
        tools=_decode_tools(body.get("tools")),
        server_tools=_decode_server_tools(body.get("tools")),
        tool_choice=_decode_tool_choice(_get(body, "toolConfig")),
        max_tokens=_get(generation, "maxOutputTokens"),
        temperature=generation.get("temperature"),
        top_p=_get(generation, "topP"),
        top_k=_get(generation, "topK"),
        stop=list(_get(generation, "stopSequences") or []),
        seed=generation.get("seed"),
        presence_penalty=_get(generation, "presencePenalty"),
        frequency_penalty=_get(generation, "frequencyPenalty"),
        response_format=_decode_format(generation),
        reasoning=reasoning,
        stream=stream,
        client_state={"include_thoughts": bool(reasoning and reasoning.include_thoughts)},
    )


def _embed_text(request: Any, where: str) -> str:
    content = request.get("content") if isinstance(request, dict) else None
    if not isinstance(content, dict):
        raise _bad(f"{where}.content: give the content to embed, with text parts", f"{where}.content")
    return "".join(p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict))


# ---------------------------------------------------------------- answers


def _call_part(call_id: str, name: str, arguments: dict[str, Any], signature: str | None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"id": call_id, "name": name, "args": arguments}}
    if signature:
        part["thoughtSignature"] = signature
    return part


def _candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts or [{"text": ""}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return candidate


def _answer_parts(response: Response, include_thoughts: bool) -> list[dict[str, Any]]:
    """The answer's content as Gemini parts: a signature rides on the next
    text or call part, or on an empty text part of its own at the end."""
    parts: list[dict[str, Any]] = []
    signature: str | None = None
    for part in response.content:
        if isinstance(part, Text):
            if part.text:
                parts.append({"text": part.text})
                if signature:
                    parts[-1]["thoughtSignature"], signature = signature, None
        elif isinstance(part, Thinking):
            if part.origin == "gemini" and part.signature and not part.text:
                signature = part.signature
            elif include_thoughts and part.text:
                parts.append({"text": part.text, "thought": True})
        elif isinstance(part, ToolCall):
            own = part.signature if part.origin == "gemini" else None
            parts.append(_call_part(part.id, part.name, part.arguments, own or signature))
            signature = None
    if signature:
        parts.append({"text": "", "thoughtSignature": signature})
    return parts


def _error_body(error: ProxyError) -> dict[str, Any]:
    status = error.status if error.status >= 400 else 500
    return {"error": {"code": status, "message": error.message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}


# ---------------------------------------------------------------- stream encoder


class _EncoderState(enum.Enum):
    STREAMING = "streaming"  # chunks go out as events arrive
    ERRORED = "errored"  # an error record ended the stream


class _ChunkEncoder(StreamEncoder):
    """Unified events as Gemini SSE chunks: text at once,
    each function call whole once its arguments are complete, finishReason
    and usage on a last chunk that still carries a part."""

    def __init__(self, request: Request) -> None:
        self.state = _EncoderState.STREAMING
        self.include_thoughts = bool(request.client_state.get("include_thoughts"))
        self.model = request.model
        self.id: str | None = None
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, signature, fragments]
        self.called = False
        self.signature: str | None = None  # a text-part signature waiting for its part
        self.stop: StopReason | None = None
        self.usage = Usage()
        self.grounding: dict[str, Any] | None = None  # sent on the last chunk, as Gemini does

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
        candidate = _candidate(parts, finish)
        body: dict[str, Any] = {"candidates": [candidate], "modelVersion": self.model}
        if finish:
            body["usageMetadata"] = _usage_json(self.usage)
            if self.grounding is not None:
                candidate["groundingMetadata"] = self.grounding
        if self.id:
            body["responseId"] = self.id
        return b"data: " + dumpb(body) + b"\r\n\r\n"

    def _signed(self, part: dict[str, Any]) -> dict[str, Any]:
        if self.signature and "thoughtSignature" not in part:
            part["thoughtSignature"], self.signature = self.signature, None
        return part

    def feed(self, event: StreamEvent) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        match event:
            case Start(id=response_id):
                self.id = response_id
            case TextDelta(text=text) if text:
                return self._chunk([self._signed({"text": text})])
            case ThinkingDelta(text=text) if text and self.include_thoughts:
                return self._chunk([{"text": text, "thought": True}])
            case ThinkingSignature(signature=signature, origin="gemini"):
                self.signature = signature
            case ToolCallStart(index=index, id=call_id, name=name, signature=signature, origin=origin):
                self.calls[index] = [call_id, name, signature if origin == "gemini" else None, []]
            case ToolCallDelta(index=index, arguments=arguments) if index in self.calls:
                self.calls[index][3].append(arguments)
            case ToolCallEnd(index=index) if index in self.calls:
                return self._emit_call(index)
            case UsageUpdate(usage=usage):
                self.usage = self.usage.merged(usage)
            case ServerToolRun(use=use):
                self.grounding = _grounding_json(use)
            case Finish(stop_reason=stop):
                self.stop = stop
            case StreamError(error=error):
                self.state = _EncoderState.ERRORED
                return b"data: " + dumpb(_error_body(error)) + b"\r\n\r\n"
        return b""

    def _emit_call(self, index: int) -> bytes:
        call_id, name, signature, fragments = self.calls.pop(index)
        self.called = True
        part = _call_part(call_id, name, loads_object("".join(fragments)), signature)
        return self._chunk([self._signed(part)])

    def close(self) -> bytes:
        if self.state is _EncoderState.ERRORED:
            return b""
        out = b"".join(self._emit_call(i) for i in sorted(self.calls))
        stop = self.stop or "end_turn"
        return out + self._chunk([self._signed({"text": ""})], _STOP_TO_WIRE.get(stop, "STOP"))


# ---------------------------------------------------------------- the client half

_MODEL = r"(?:v1|v1beta)/models/(?P<model>[^/:]+)"


class GeminiClient(ClientCodec):
    protocol = "gemini"
    path_roots = ("/v1beta",)
    routes = (
        Route("POST", rf"/{_MODEL}:generateContent", "generate", stream=False),
        Route("POST", rf"/{_MODEL}:streamGenerateContent", "generate", stream=True),
        Route("POST", rf"/{_MODEL}:countTokens", "count_tokens"),
        Route("POST", rf"/{_MODEL}:embedContent", "embed"),
        Route("POST", rf"/{_MODEL}:batchEmbedContents", "embed", endpoint="batch"),
        Route("GET", r"/v1beta/models", "list_models"),
        Route("GET", r"/v1beta/models/(?P<model>[^/:]+)", "get_model"),
        # /v1/models is OpenAI's too: the Gemini SDK is told apart by its key header.
        Route("GET", r"/v1/models", "list_models", header="x-goog-api-key"),
        Route("GET", r"/v1/models/(?P<model>[^/:]+)", "get_model", header="x-goog-api-key"),
    )

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        return _decode_request(body, ctx.model or "", bool(ctx.stream))

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        parts = _answer_parts(response, bool(request.client_state.get("include_thoughts")))
        candidate = _candidate(parts, _STOP_TO_WIRE.get(response.stop_reason, "STOP"))
        search = next((p for p in response.content if isinstance(p, ServerToolUse)), None)
        if search is not None:
            candidate["groundingMetadata"] = _grounding_json(search)
        body: dict[str, Any] = {
            "candidates": [candidate],
            "usageMetadata": _usage_json(response.usage),
            "modelVersion": request.model,
        }
        if response.id:
            body["responseId"] = response.id
        return body

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return _ChunkEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return _error_body(error)

    # ------------------------------------------------------------ models

    def encode_model_list(self, names: list[str]) -> dict[str, Any]:
        return {"models": [self.encode_model(name) for name in names]}

    def encode_model(self, name: str) -> dict[str, Any]:
        return {
            "name": f"models/{name}",
            "displayName": name,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens", "embedContent"],
        }

    # ------------------------------------------------------------ count tokens

    def decode_count_request(self, body: Any, ctx: ClientContext) -> Request:
        inner = _get(body, "generateContentRequest")
        if isinstance(inner, dict):
            return _decode_request(inner, ctx.model or "", False)
        return _decode_request(body, ctx.model or "", False)

    def encode_count_response(self, tokens: int) -> dict[str, Any]:
        return {"totalTokens": tokens}

    # ------------------------------------------------------------ embeddings

    def decode_embed_request(self, body: Any, ctx: ClientContext) -> EmbedRequest:
        if not isinstance(body, dict):
            raise _bad("the request body must be a JSON object")
        if ctx.endpoint == "batch":
            requests = body.get("requests")
            if not isinstance(requests, list) or not requests:
                raise _bad("requests: give a list of embedContent requests", "requests")
            inputs = [_embed_text(r, f"requests[{i}]") for i, r in enumerate(requests)]
            dimensions = _get(requests[0], "outputDimensionality")
        else:
            inputs, dimensions = [_embed_text(body, "request")], _get(body, "outputDimensionality")
        return EmbedRequest(
            model=ctx.model or "", inputs=inputs, dimensions=dimensions, client_state={"batch": ctx.endpoint == "batch"}
        )

    def encode_embed_response(self, response: EmbedResponse, request: EmbedRequest) -> dict[str, Any]:
        if request.client_state.get("batch"):
            return {"embeddings": [{"values": v} for v in response.vectors]}
        return {"embedding": {"values": response.vectors[0] if response.vectors else []}}
