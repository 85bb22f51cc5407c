"""Anthropic Messages as the proxy speaks it to an upstream server: a
unified request encoded as a Messages body (with the API's limits on
thinking, turns and cache breakpoints met), and the upstream's answers, SSE
streams and errors decoded into the unified form."""

from __future__ import annotations

import enum
import json
from typing import Any, Mapping

from ...errors import ProxyError, status_for_kind
from ...framing import SSEDecoder, SSEEvent, parse_json_data
from ...ids import for_anthropic, new_call_id
from ...jsonutil import loads_object
from ...unified import (
    CacheMark,
    Document,
    Finish,
    Image,
    Message,
    RedactedThinking,
    Request,
    Response,
    SearchResult,
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
from ..common import effort_to_budget, fold_system_turns, retry_after, server_tool_text, upstream_error_body
from .wire import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    KIND_BY_TYPE,
    MAX_CACHE_MARKS,
    MIN_THINKING_BUDGET,
    SERVER_TOOL_TYPES,
    STOP_FROM_WIRE,
    SYSTEM_TURNS_BETA,
    TOOL_BETAS,
    search_results,
    usage_from,
)

# ---------------------------------------------------------------- content blocks


def _marked(block: dict[str, Any], cache: CacheMark | None) -> dict[str, Any]:
    if cache is not None:
        block["cache_control"] = cache
    return block


def _image_block(image: Image) -> dict[str, Any]:
    if image.data is not None:
        source = {"type": "base64", "media_type": image.media_type or "image/png", "data": image.data}
    else:
        source = {"type": "url", "url": image.url or ""}
    return _marked({"type": "image", "source": source}, image.cache)


def _document_block(document: Document) -> dict[str, Any]:
    if document.text is not None:
        source: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": document.text}
    elif document.data is not None:
        source = {"type": "base64", "media_type": document.media_type, "data": document.data}
    else:
        source = {"type": "url", "url": document.url or ""}
    block: dict[str, Any] = {"type": "document", "source": source}
    if document.title:
        block["title"] = document.title
    return _marked(block, document.cache)


def _result_block(part: Text | Image | Document) -> dict[str, Any]:
    if isinstance(part, Text):
        return _marked({"type": "text", "text": part.text}, part.cache)
    if isinstance(part, Image):
        return _image_block(part)
    return _document_block(part)


def _tool_result_block(part: ToolResult) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": for_anthropic(part.id)}
    inner = [_result_block(p) for p in part.content if not (isinstance(p, Text) and not p.text)]
    if inner:
        plain = all(b["type"] == "text" and "cache_control" not in b for b in inner)
        result["content"] = "".join(b["text"] for b in inner) if plain else inner
    if part.is_error:
        result["is_error"] = True
    return _marked(result, part.cache)


def _content(message: Message, keep_thinking: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, Text):
            if part.text:
                blocks.append(_marked({"type": "text", "text": part.text}, part.cache))
        elif isinstance(part, Image):
            blocks.append(_image_block(part))
        elif isinstance(part, Document):
            blocks.append(_document_block(part))
        elif isinstance(part, ToolCall):
            blocks.append(
                {"type": "tool_use", "id": for_anthropic(part.id), "name": part.name, "input": part.arguments}
            )
        elif isinstance(part, ToolResult):
            blocks.append(_tool_result_block(part))
        elif isinstance(part, ServerToolUse):
            # Another vendor's server ran it: what it did, in words.
            blocks.append({"type": "text", "text": server_tool_text(part)})
        elif isinstance(part, Thinking) and keep_thinking and part.origin == "claude" and part.signature:
            if part.redacted:
                blocks.append({"type": "redacted_thinking", "data": part.signature})
            else:
                blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    if message.role == "user":
        blocks.sort(key=lambda b: b["type"] != "tool_result")
    return blocks


# ---------------------------------------------------------------- messages


def _messages(request: Request, keep_thinking: bool, system_turns: bool) -> list[dict[str, Any]]:
    """Turns as the API takes them: one role at a time, a user turn first;
    system turns stay in place only under the beta that allows them."""
    out: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            if system_turns:
                out.append(
                    {
                        "role": "system",
                        "content": [
                            _marked({"type": "text", "text": p.text}, p.cache)
                            for p in message.content
                            if isinstance(p, Text) and p.text
                        ],
                    }
                )
            continue
        blocks = _content(message, keep_thinking)
        if not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)
            if message.role == "user":
                out[-1]["content"].sort(key=lambda b: b["type"] != "tool_result")
        else:
            out.append({"role": message.role, "content": blocks})
    first = next((m for m in out if m["role"] != "system"), None)
    if first is not None and first["role"] != "user":
        out.insert(
            out.index(first), {"role": "user", "content": [{"type": "text", "text": "(conversation continues)"}]}
        )
    return out


def _system(request: Request) -> dict[str, Any]:
    """The system prompt, as a marked block where the client cached it; a
    request for a JSON object says so there (the API has no such mode)."""
    system = request.system
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        note = "Answer with one JSON object and nothing else."
        system = f"{system}\n\n{note}" if system else note
    if not system:
        return {}
    if request.system_cache:
        return {"system": [_marked({"type": "text", "text": system}, request.system_cache)]}
    return {"system": system}


def _limit_cache_marks(body: dict[str, Any], limit: int = MAX_CACHE_MARKS) -> None:
    """The API takes at most four cache breakpoints; a later one caches more,
    so the earliest ones beyond four are dropped."""
    marked: list[dict[str, Any]] = [t for t in body.get("tools", []) if "cache_control" in t]
    system = body.get("system")
    if isinstance(system, list):
        marked += [b for b in system if "cache_control" in b]
    for message in body["messages"]:
        for block in message["content"]:
            if "cache_control" in block:
                marked.append(block)
            inner = block.get("content")
            if isinstance(inner, list):
                marked += [b for b in inner if isinstance(b, dict) and "cache_control" in b]
    for block in marked[: max(len(marked) - limit, 0)]:
        del block["cache_control"]


# ---------------------------------------------------------------- thinking and sampling


def _genuine_thinking(message: Message) -> bool:
    first = message.content[0] if message.content else None
    return isinstance(first, Thinking) and first.origin == "claude" and bool(first.signature)


def _thinking_allowed(request: Request) -> bool:
    """Claude requires the last assistant turn that used tools to start with
    its own signed thinking; history from another vendor cannot, so thinking
    is turned off for such a request (the API refuses it otherwise)."""
    for message in reversed(request.messages):
        if message.role == "assistant":
            if any(isinstance(p, ToolCall) for p in message.content):
                return _genuine_thinking(message)
            return True
    return True


def _thinking_on(request: Request) -> bool:
    """Whether the request is sent with thinking: asked for, allowed by its
    history, and not with a forced tool (which the API refuses with thinking)."""
    reasoning = request.reasoning
    forced_tool = request.tool_choice is not None and request.tool_choice.mode in ("any", "tool")
    return bool(reasoning and reasoning.enabled) and _thinking_allowed(request) and not forced_tool


def _thinking_and_limit(request: Request, thinking: bool) -> dict[str, Any]:
    """`thinking` and `max_tokens`: the budget at least the API's minimum
    and below max_tokens, which grows to fit it where the client set none
    that could."""
    body: dict[str, Any] = {}
    reasoning = request.reasoning
    max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
    if thinking:
        assert reasoning is not None
        budget = max(reasoning.budget_tokens or effort_to_budget(reasoning.effort), MIN_THINKING_BUDGET)
        if budget >= max_tokens:
            if request.max_tokens and request.max_tokens > MIN_THINKING_BUDGET:
                budget = request.max_tokens - 1
            else:
                max_tokens = budget + DEFAULT_MAX_TOKENS
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif reasoning is not None and reasoning.enabled is False:
        body["thinking"] = {"type": "disabled"}
    body["max_tokens"] = max_tokens
    return body


def _sampling(request: Request, thinking: bool) -> dict[str, Any]:
    """Sampling options as the API takes them; with thinking it refuses
    temperature and top_k, and top_p below 0.95."""
    body: dict[str, Any] = {}
    if request.temperature is not None and not thinking:
        body["temperature"] = min(max(request.temperature, 0.0), 1.0)
    if request.top_p is not None:
        body["top_p"] = max(request.top_p, 0.95) if thinking else request.top_p
    if request.top_k is not None and not thinking:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = request.stop
    return body


# ---------------------------------------------------------------- tools


def _server_tool(tool: ServerTool) -> dict[str, Any]:
    if tool.wire:
        return tool.wire
    return {"type": SERVER_TOOL_TYPES[tool.kind], "name": tool.kind, **tool.options}


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("type") == "object":
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("type", "properties")}
    return {"type": "object", "properties": schema.get("properties", {}), **rest}


def _tools_and_choice(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {}
    server = [_server_tool(t) for t in request.server_tools if t.wire or t.kind in SERVER_TOOL_TYPES]
    if not request.tools and not server:
        return body
    body["tools"] = [
        _marked(
            {"name": t.name, "description": t.description or "", "input_schema": _object_schema(t.parameters)}, t.cache
        )
        for t in request.tools
    ] + server
    choice = request.tool_choice
    wire: dict[str, Any] | None = None
    if choice is not None:
        if choice.mode == "tool":
            wire = {"type": "tool", "name": choice.name}
        else:
            wire = {"type": choice.mode}
    if request.parallel_tool_calls is False and (wire is None or wire["type"] != "none"):
        wire = wire or {"type": "auto"}
        wire["disable_parallel_tool_use"] = True
    if wire is not None:
        body["tool_choice"] = wire
    return body


# ---------------------------------------------------------------- answers


def _server_use(use_block: dict[str, Any], result_block: dict[str, Any] | None) -> ServerToolUse:
    """A server tool's use and result blocks from an Anthropic answer."""
    raw_input = use_block.get("input")
    use = ServerToolUse(
        id=str(use_block.get("id") or new_call_id("srvtoolu_")),
        name=str(use_block.get("name") or ""),
        input=raw_input if isinstance(raw_input, dict) else {},
    )
    if result_block is not None:
        use.result = search_results(result_block)
        content = result_block.get("content")
        use.results = (
            [
                SearchResult(url=item["url"], title=item.get("title"))
                for item in content
                if isinstance(item, dict) and isinstance(item.get("url"), str)
            ]
            if isinstance(content, list)
            else []
        )
    return use


def _answer_part(block: dict[str, Any], results: dict[Any, dict[str, Any]]) -> Any:
    """One block of a whole answer as a unified part (None: a block left
    out, such as a server tool's result, read with its use)."""
    kind = block.get("type")
    if kind == "server_tool_use":
        return _server_use(block, results.get(block.get("id")))
    if kind == "text":
        return Text(text=block.get("text", ""))
    if kind == "thinking":
        return Thinking(text=block.get("thinking", ""), signature=block.get("signature"), origin="claude")
    if kind == "redacted_thinking":
        return Thinking(signature=block.get("data"), redacted=True, origin="claude")
    if kind == "tool_use":
        return ToolCall(
            id=block.get("id") or new_call_id("toolu_"),
            name=block.get("name", ""),
            arguments=block.get("input") or {},
            origin="claude",
        )
    return None


def _in_stream_error(error: Any) -> ProxyError:
    if not isinstance(error, dict):
        return ProxyError(502, "the upstream stream failed")
    kind = KIND_BY_TYPE.get(str(error.get("type")), "internal")
    return ProxyError(status_for_kind(kind), str(error.get("message") or "upstream error"), kind=kind)  # type: ignore[arg-type]


# ---------------------------------------------------------------- stream decoder


class _DecoderState(enum.Enum):
    WAITING = "waiting"  # before message_start
    STREAMING = "streaming"  # blocks arriving
    FINISHED = "finished"  # message_delta with stop_reason seen
    DONE = "done"  # message_stop or error


class _EventDecoder(RecordDecoder):
    def __init__(self) -> None:
        super().__init__(SSEDecoder())
        self.state = _DecoderState.WAITING
        self.blocks: dict[int, tuple[str, int]] = {}  # block index -> (type, call index)
        self.calls = 0
        self.raw_usage: dict[str, Any] = {}
        # Server tool uses by block index, their input JSON gathering, until
        # their result block arrives.
        self.server_uses: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def _ended(self) -> bool:
        return self.state not in (_DecoderState.WAITING, _DecoderState.STREAMING)

    def _usage(self, raw: dict[str, Any] | None) -> UsageUpdate:
        self.raw_usage.update({k: v for k, v in (raw or {}).items() if isinstance(v, int)})
        return UsageUpdate(usage_from(self.raw_usage))

    def _record(self, record: SSEEvent, events: list[StreamEvent]) -> None:
        if self.state is _DecoderState.DONE or not record.data:
            return
        body = parse_json_data(record.data)
        kind = (body.get("type") if isinstance(body, dict) else None) or record.event
        if kind == "message_start":
            message = body.get("message") or {}
            events.append(Start(id=message.get("id"), model=message.get("model")))
            events.append(self._usage(message.get("usage")))
            self.state = _DecoderState.STREAMING
        elif kind == "content_block_start":
            self._block_start(body.get("index", len(self.blocks)), body.get("content_block") or {}, events)
        elif kind == "content_block_delta":
            self._block_delta(body.get("index", -1), body.get("delta") or {}, events)
        elif kind == "content_block_stop":
            _, call = self.blocks.get(body.get("index", -1), ("", -1))
            if call >= 0:
                events.append(ToolCallEnd(call))
        elif kind == "message_delta":
            delta = body.get("delta") or {}
            events.append(self._usage(body.get("usage")))
            if delta.get("stop_reason"):
                events.append(Finish(STOP_FROM_WIRE.get(delta["stop_reason"], "other"), delta.get("stop_sequence")))
                self.state = _DecoderState.FINISHED
        elif kind == "message_stop":
            if self.state is not _DecoderState.FINISHED:
                events.append(Finish("tool_use" if self.calls else "end_turn"))
            self.state = _DecoderState.DONE
        elif kind == "error":
            events.append(StreamError(_in_stream_error(body.get("error") if isinstance(body, dict) else None)))
            self.state = _DecoderState.DONE

    def _block_start(self, index: Any, block: dict[str, Any], events: list[StreamEvent]) -> None:
        block_type = block.get("type")
        if block_type == "tool_use":
            call = self.calls
            self.calls += 1
            self.blocks[index] = ("tool_use", call)
            events.append(
                ToolCallStart(call, block.get("id") or new_call_id("toolu_"), block.get("name", ""), origin="claude")
            )
            if block.get("input"):
                events.append(ToolCallDelta(call, json.dumps(block["input"])))
            return
        self.blocks[index] = (block_type or "", -1)
        if block_type == "server_tool_use":
            self.server_uses[index] = (block, [])
        elif isinstance(block_type, str) and block_type.endswith("_tool_result"):
            self._server_result(block, events)
        elif block_type == "redacted_thinking":
            events.append(RedactedThinking(block.get("data", ""), origin="claude"))
        elif block_type == "text" and block.get("text"):
            events.append(TextDelta(block["text"]))
        elif block_type == "thinking" and block.get("thinking"):
            events.append(ThinkingDelta(block["thinking"]))

    def _block_delta(self, index: Any, delta: dict[str, Any], events: list[StreamEvent]) -> None:
        _, call = self.blocks.get(index, ("", -1))
        delta_type = delta.get("type")
        if delta_type == "text_delta" and delta.get("text"):
            events.append(TextDelta(delta["text"]))
        elif delta_type == "thinking_delta" and delta.get("thinking"):
            events.append(ThinkingDelta(delta["thinking"]))
        elif delta_type == "signature_delta":
            events.append(ThinkingSignature(delta.get("signature", ""), origin="claude"))
        elif delta_type == "input_json_delta" and call >= 0 and delta.get("partial_json"):
            events.append(ToolCallDelta(call, delta["partial_json"]))
        elif delta_type == "input_json_delta" and index in self.server_uses:
            self.server_uses[index][1].append(str(delta.get("partial_json") or ""))

    def _server_result(self, block: dict[str, Any], events: list[StreamEvent]) -> None:
        for index, (use, pieces) in list(self.server_uses.items()):
            if use.get("id") == block.get("tool_use_id"):
                del self.server_uses[index]
                streamed = loads_object("".join(pieces)) if pieces else use.get("input")
                events.append(ServerToolRun(_server_use({**use, "input": streamed}, block)))
                return


# ---------------------------------------------------------------- the upstream half


class ClaudeUpstream(UpstreamCodec):
    protocol = "claude"
    forwarded_headers = ("anthropic-beta",)
    stream_end = b'event: message_stop\ndata: {"type":"message_stop"}'
    stream_end_mark = b'"message_stop"}'
    takes_betas = True
    server_tools = frozenset(SERVER_TOOL_TYPES)
    document_types = frozenset({"application/pdf", "text/plain"})
    document_urls = True

    def upstream_path(self, model: str, stream: bool) -> str:
        return "/messages"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        system_turns = SYSTEM_TURNS_BETA in request.betas
        if not system_turns:
            request = fold_system_turns(request)
        thinking = _thinking_on(request)
        body: dict[str, Any] = {"model": model, "messages": _messages(request, thinking, system_turns)}
        body.update(_system(request))
        body.update(_thinking_and_limit(request, thinking))
        body.update(_sampling(request, thinking))
        body.update(_tools_and_choice(request))
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.schema_:
            body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema_}}
        if request.stream:
            body["stream"] = True
        _limit_cache_marks(body)
        return body

    def upstream_headers(self, request: Request) -> dict[str, str]:
        # A server tool written here from another protocol's request needs
        # the beta a Claude client would have sent with it.
        needed = [TOOL_BETAS[t.kind] for t in request.server_tools if not t.wire and t.kind in TOOL_BETAS]
        betas = list(dict.fromkeys([*request.betas, *needed]))
        return {"anthropic-beta": ",".join(betas)} if betas else {}

    def left_out(self, request: Request) -> list[str]:
        # A tool in Anthropic's own wire form is sent as it came.
        return [
            f"server tool {t.name} ({t.kind})"
            for t in request.server_tools
            if not t.wire and t.kind not in self.server_tools
        ]

    def rename_model(self, answer: Any, model: str) -> None:
        if (
            isinstance(answer, dict)
            and answer.get("type") == "message_start"
            and isinstance(answer.get("message"), dict)
        ):
            answer["message"]["model"] = model
        else:
            super().rename_model(answer, model)

    def decode_response(self, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise ProxyError(502, "the upstream answer has no content")
        results = {
            b.get("tool_use_id"): b
            for b in body["content"]
            if isinstance(b, dict) and str(b.get("type", "")).endswith("_tool_result")
        }
        content: list[Any] = []
        for block in body["content"]:
            if not isinstance(block, dict):
                raise ProxyError(502, "the upstream answer holds a content block that is not an object")
            part = _answer_part(block, results)
            if part is not None:
                content.append(part)
        return Response(
            id=body.get("id"),
            model=body.get("model"),
            content=content,
            stop_reason=STOP_FROM_WIRE.get(body.get("stop_reason") or "end_turn", "other"),
            stop_sequence=body.get("stop_sequence"),
            usage=usage_from(body.get("usage") or {}),
        )

    def stream_decoder(self) -> StreamDecoder:
        return _EventDecoder()

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        parsed, message = upstream_error_body(body, status)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        return ProxyError(status, message, retry_after=retry_after(headers))

    # ------------------------------------------------------------ count tokens

    def count_path(self, model: str) -> str | None:
        return "/messages/count_tokens"

    def encode_count_request(self, request: Request, model: str) -> dict[str, Any]:
        body = self.encode_request(request.model_copy(update={"stream": False}), model)
        return {
            k: v for k, v in body.items() if k in ("model", "messages", "system", "tools", "tool_choice", "thinking")
        }

    def decode_count_response(self, body: Any) -> int:
        return int(body.get("input_tokens", 0))
