"""Google Gemini generateContent, both as the
client's protocol and as an upstream's."""

from __future__ import annotations

import base64
import enum
import json
import re
from functools import lru_cache
from typing import Any, Mapping

from ..errors import ProxyError, kind_for_status
from ..framing import SSEDecoder, SSEEvent, parse_json_data
from ..ids import new_call_id
from ..jsonutil import dumpb, dumps, loads_object
from ..unified import (
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
from .base import (
    ClientContext,
    Codec,
    RecordDecoder,
    Route,
    StreamDecoder,
    StreamEncoder,
)
from .common import (
    call_names,
    document_text,
    effort_to_budget,
    fold_system_turns,
    pair_tool_results,
    retry_after,
    server_tool_text,
    text_of,
    upstream_error_body,
)
from .gemini_schema import from_gemini, has_properties, to_gemini

# History the model did not sign itself (another vendor's turn, or a client
# that has nowhere to keep signatures) carries Google's documented sentinel.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_SENTINELS = frozenset({SKIP_SIGNATURE, "context_engineering_is_the_way_to_go"})

# ---------------------------------------------------------------- key spelling

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@lru_cache(maxsize=128)
def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field under its lowerCamelCase or snake_case name: Google's parser
    takes both and the official SDK sends a mixture."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(_snake(name), default)


# ---------------------------------------------------------------- mappings

_BLOCKED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_STOP_TO_WIRE = {
    "end_turn": "STOP",
    "stop_sequence": "STOP",
    "tool_use": "STOP",
    "pause_turn": "STOP",
    "max_tokens": "MAX_TOKENS",
    "context_window": "MAX_TOKENS",
    "refusal": "SAFETY",
    "other": "OTHER",
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",
}
_LEVELS = {"minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH", "max": "HIGH"}


def _stop_from_wire(reason: str | None, called: bool) -> StopReason:
    if reason in (None, "STOP"):
        return "tool_use" if called else "end_turn"
    if reason == "MAX_TOKENS":
        return "max_tokens"
    if reason in _BLOCKED:
        return "refusal"
    return "tool_use" if called else "end_turn"


def _usage_json(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens or 0
    output = usage.output_tokens or 0
    thoughts = usage.reasoning_tokens or 0
    body = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": max(output - thoughts, 0),
        "totalTokenCount": prompt + output,
    }
    if thoughts:
        body["thoughtsTokenCount"] = thoughts
    if usage.cache_read_tokens:
        body["cachedContentTokenCount"] = usage.cache_read_tokens
    return body


def _usage_from(meta: Any) -> Usage:
    if not isinstance(meta, dict):
        return Usage()
    prompt = _get(meta, "promptTokenCount")
    tool_prompt = _get(meta, "toolUsePromptTokenCount") or 0
    candidates = _get(meta, "candidatesTokenCount")
    thoughts = _get(meta, "thoughtsTokenCount")
    output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=None if prompt is None else prompt + tool_prompt,
        output_tokens=output,
        cache_read_tokens=_get(meta, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


# ---------------------------------------------------------------- client request decoding


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
        signature = _get(part, "thoughtSignature")
        call = _get(part, "functionCall")
        response = _get(part, "functionResponse")
        inline = _get(part, "inlineData")
        file = _get(part, "fileData")
        if call is not None:
            args = call.get("args") or {}
            if not isinstance(args, dict):
                raise _bad(f"{here}.functionCall.args: must be an object", here)
            out.append(
                ToolCall(
                    id=call.get("id") or "",
                    name=call.get("name", ""),
                    arguments=args,
                    signature=signature if signature not in _SENTINELS else None,
                    origin="gemini" if signature else None,
                )
            )
        elif response is not None:
            out.append(_tool_result(response, here))
        elif inline is not None:
            out.append(_inline_part(inline, here))
        elif file is not None:
            media_type = _get(file, "mimeType")
            if isinstance(media_type, str) and not media_type.startswith("image/"):
                out.append(Document(media_type=media_type, url=_get(file, "fileUri")))
            else:
                out.append(Image(media_type=media_type, url=_get(file, "fileUri")))
        elif "text" in part:
            if part.get("thought"):
                out.append(Thinking(text=part["text"] or "", signature=signature, origin="gemini"))
            else:
                if signature and signature not in _SENTINELS:
                    out.append(Thinking(signature=signature, origin="gemini"))
                out.append(Text(text=part["text"] or ""))
        elif signature:
            out.append(Thinking(signature=signature, origin="gemini"))
        else:
            raise _bad(
                f"{here}: this part holds nothing ccproxy can convert (text, inlineData, fileData, "
                "functionCall, functionResponse)",
                here,
            )
    for part in out:
        if isinstance(part, ToolCall) and not part.id:
            part.id = new_call_id()
    return out


_STANDARD_BASE64 = str.maketrans("-_", "+/")


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


# Gemini's own tools, by the kind of server tool each is.
_SERVER_TOOLS = {"googleSearch": "web_search", "urlContext": "web_fetch", "codeExecution": "code_execution"}
_SERVER_TOOL_KEYS = {kind: key for key, kind in _SERVER_TOOLS.items()}


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


def _decode_request(body: Any, model: str, stream: bool) -> Request:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    generation = _get(body, "generationConfig") or {}
    if (_get(generation, "candidateCount") or 1) != 1:
        raise _bad(
            "generationConfig.candidateCount: ccproxy returns one candidate; send 1", "generationConfig.candidateCount"
        )
    system = _get(body, "systemInstruction")
    system_text = None
    if isinstance(system, dict):
        system_text = (
            "\n\n".join(p.get("text", "") for p in system.get("parts") or [] if isinstance(p, dict) and p.get("text"))
            or None
        )
    elif isinstance(system, str):
        system_text = system or None
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


# ---------------------------------------------------------------- client answers


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


def _error_body(error: ProxyError) -> dict[str, Any]:
    status = error.status if error.status >= 400 else 500
    return {"error": {"code": status, "message": error.message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}


# ---------------------------------------------------------------- upstream stream decoder


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


def _grounding(candidate: Any) -> ServerToolUse | None:
    """The Google Search a grounded answer ran: its queries and sources."""
    meta = _get(candidate, "groundingMetadata") if isinstance(candidate, dict) else None
    if not isinstance(meta, dict):
        return None
    queries = [q for q in _get(meta, "webSearchQueries") or [] if isinstance(q, str)]
    results = []
    for chunk in _get(meta, "groundingChunks") or []:
        web = chunk.get("web") if isinstance(chunk, dict) else None
        if isinstance(web, dict) and isinstance(web.get("uri"), str):
            results.append(
                SearchResult(url=web["uri"], title=web.get("title") if isinstance(web.get("title"), str) else None)
            )
    if not queries and not results:
        return None
    return ServerToolUse(
        id=new_call_id("srvtoolu_"), name="web_search", input={"query": "; ".join(queries)}, results=results
    )


def _grounding_json(use: ServerToolUse) -> dict[str, Any]:
    query = use.input.get("query")
    return {
        "webSearchQueries": [query] if isinstance(query, str) and query else [],
        "groundingChunks": [{"web": {"uri": r.url, "title": r.title or r.url}} for r in use.results],
    }


def _error_from(body: Any, status: int) -> ProxyError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ProxyError(status, f"upstream error {status}")
    retry, code = None, error.get("status") if isinstance(error.get("status"), str) else None
    for detail in error.get("details") or []:
        kind = str(detail.get("@type", ""))
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


# ---------------------------------------------------------------- upstream request encoding


def _contents(request: Request) -> list[dict[str, Any]]:
    names = call_names(request.messages)
    contents: list[dict[str, Any]] = []
    for message in request.messages:
        role = "model" if message.role == "assistant" else "user"
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
                call: dict[str, Any] = {"functionCall": {"id": part.id, "name": part.name, "args": part.arguments}}
                own = part.signature if part.origin == "gemini" else None
                chosen = own or signature or (SKIP_SIGNATURE if first_call else None)
                if chosen:
                    call["thoughtSignature"] = chosen
                signature, first_call = None, False
                parts.append(call)
            elif isinstance(part, ToolResult):
                parts.append(_response_part(part, names))
                trailing.extend(
                    _image_part(p) if isinstance(p, Image) else _document_part(p)
                    for p in part.content
                    if isinstance(p, (Image, Document))
                )
        parts.extend(trailing)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


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
                parsed = json.loads(text)
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


def _embed_text(request: Any, where: str) -> str:
    content = request.get("content") if isinstance(request, dict) else None
    if not isinstance(content, dict):
        raise _bad(f"{where}.content: give the content to embed, with text parts", f"{where}.content")
    return "".join(p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict))


# ---------------------------------------------------------------- the codec

_MODEL = r"(?:v1|v1beta)/models/(?P<model>[^/:]+)"


class GeminiCodec(Codec):
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

    # ------------------------------------------------------------ client side

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        return _decode_request(body, ctx.model or "", bool(ctx.stream))

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        include_thoughts = bool(request.client_state.get("include_thoughts"))
        parts: list[dict[str, Any]] = []
        signature: str | None = None
        called = False
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
                called = True
                own = part.signature if part.origin == "gemini" else None
                parts.append(_call_part(part.id, part.name, part.arguments, own or signature))
                signature = None
        if signature:
            parts.append({"text": "", "thoughtSignature": signature})
        del called
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

    # ------------------------------------------------------------ upstream side

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
        error.status = status
        if error.retry_after is None:
            error.retry_after = retry_after(headers)
        return error

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

    def count_path(self, model: str) -> str | None:
        return f"/models/{model}:countTokens"

    def encode_count_request(self, request: Request, model: str) -> dict[str, Any]:
        inner = self.encode_request(request.model_copy(update={"stream": False}), model)
        inner.pop("generationConfig", None)
        return {"generateContentRequest": {"model": f"models/{model}", **inner}}

    def decode_count_response(self, body: Any) -> int:
        return int(_get(body, "totalTokens") or 0)

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
