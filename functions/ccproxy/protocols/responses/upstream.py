"""The OpenAI Responses API as the proxy speaks it to an upstream server: a
unified request encoded as a /responses body, and the upstream's Response
objects, event streams and errors decoded into the unified form."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from ...errors import ProxyError
from ...framing import SSEDecoder, SSEEvent, parse_json_data
from ...ids import new_call_id
from ...jsonutil import dumps, loads_object
from ...unified import (
    Document,
    Finish,
    Image,
    Message,
    Request,
    Response,
    SearchResult,
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
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    UsageUpdate,
)
from ..base import RecordDecoder, StreamDecoder, UpstreamCodec
from ..common import (
    CUSTOM_INPUT,
    budget_to_effort,
    server_tool_text,
)
from ..openai.wire import read_error
from .wire import (
    ENCRYPTED,
    PROTOCOL,
    STOP_BY_INCOMPLETE,
    builtin_kind,
    client_facts,
    compaction_of,
    custom_input,
    error_from,
    input_part,
    pack_reasoning,
    read_summary,
    summary_text,
    text_format_json,
    tool_choice_json,
    tool_json,
    unpack_reasoning,
    usage_from,
    web_search_json,
)

# The API refuses a smaller max_output_tokens.
MIN_OUTPUT_TOKENS = 16
# Unified effort levels the API spells otherwise.
_EFFORT = {"max": "xhigh"}
# What the input_tokens route takes of a request body.
_COUNT_FIELDS = ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text")
# What the compact route takes of a request body.
_COMPACT_FIELDS = ("model", "input", "instructions", "prompt_cache_key", "service_tier")
# What a Responses client said that a Responses upstream is sent as it was.
_SENT_ON = ("prompt_cache_key", "metadata", "safety_identifier", "user", "service_tier")
SOURCES = "web_search_call.action.sources"
# The server tools a Responses upstream runs itself.
SERVER_TOOLS = frozenset({"web_search"})

# ---------------------------------------------------------------- request: input items


def _call_output(result: ToolResult, custom: bool) -> dict[str, Any]:
    """A tool's result: a string where it is all text, parts where it holds
    images or files."""
    output: str | list[dict[str, Any]]
    if all(isinstance(p, Text) for p in result.content):
        output = "".join(p.text for p in result.content if isinstance(p, Text))
        if result.is_error:
            output = "Error: " + output
    else:
        output = [input_part(p) for p in result.content]
    kind = "custom_tool_call_output" if custom else "function_call_output"
    return {"type": kind, "call_id": result.id, "output": output}


def _message(role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": parts}


class _InputWriter:
    """Unified turns as input items, in order. Item ids are left out, as
    Codex does: the upstream stores nothing (store is false), so an id would
    name nothing it has. Reasoning goes back only where a Responses upstream
    made it, with its encrypted content; so does a compaction the API made."""

    def __init__(self, request: Request) -> None:
        custom_names = {t.name for t in request.tools if t.kind == "custom"}
        self.custom_calls = {
            part.id
            for message in request.messages
            for part in message.content
            if isinstance(part, ToolCall) and part.name in custom_names
        }
        self.custom_names = custom_names
        self.items: list[dict[str, Any]] = []

    def write(self, message: Message) -> None:
        if message.role == "assistant":
            self._assistant(message.content)
        elif message.role == "system":
            texts = [{"type": "input_text", "text": p.text} for p in message.content if isinstance(p, Text)]
            if texts:
                self.items.append(_message("system", texts))
        else:
            self._user(message.content)

    def _user(self, content: list[Any]) -> None:
        parts = []
        for part in content:
            if isinstance(part, ToolResult):
                self.items.append(_call_output(part, part.id in self.custom_calls))
            elif isinstance(part, (Text, Image, Document)):
                parts.append(input_part(part))
        if parts:
            self.items.append(_message("user", parts))

    def _assistant(self, content: list[Any]) -> None:
        texts: list[str] = []
        for part in content:
            if isinstance(part, Text):
                texts.append(part.text)
                continue
            self._assistant_text(texts)
            texts = []
            if isinstance(part, Thinking):
                self._reasoning(part)
            elif isinstance(part, ToolCall):
                self.items.append(self._call(part))
            elif isinstance(part, ServerToolUse):
                # A search the upstream ran is told in words: its items
                # cannot be replayed without what the upstream stored.
                self._assistant_text([server_tool_text(part)])
        self._assistant_text(texts)

    def _assistant_text(self, texts: list[str]) -> None:
        text = "".join(texts)
        if text:
            self.items.append(_message("assistant", [{"type": "output_text", "text": text}]))

    def _reasoning(self, part: Thinking) -> None:
        encrypted = compaction_of(part)
        if encrypted is not None:
            self.items.append({"type": "compaction", "encrypted_content": encrypted})
            return
        if part.origin != PROTOCOL or not part.signature or part.redacted:
            return  # another vendor's thinking: no Responses upstream can read it
        encrypted = unpack_reasoning(part.signature)[1]
        summary = [{"type": "summary_text", "text": part.text}] if part.text else []
        self.items.append({"type": "reasoning", "summary": summary, "encrypted_content": encrypted})

    def _call(self, part: ToolCall) -> dict[str, Any]:
        if part.name in self.custom_names:
            return {
                "type": "custom_tool_call",
                "call_id": part.id,
                "name": part.name,
                "input": custom_input(part.arguments),
            }
        return {"type": "function_call", "call_id": part.id, "name": part.name, "arguments": dumps(part.arguments)}


def _input_items(request: Request) -> list[dict[str, Any]]:
    writer = _InputWriter(request)
    for message in request.messages:
        writer.write(message)
    return writer.items


def _readable(item: Any) -> Any:
    """An input item as a Responses upstream can read it: a compaction the
    proxy made (a summary another upstream wrote) as the system turn its
    summary is; any other item as it is."""
    if not (isinstance(item, dict) and item.get("type") in ("compaction", "compaction_summary")):
        return item
    encrypted = item.get("encrypted_content")
    summary = read_summary(encrypted) if isinstance(encrypted, str) else None
    if summary is None:
        return item
    return _message("system", [{"type": "input_text", "text": summary_text(summary)}])


# ---------------------------------------------------------------- request: options


def _tools(request: Request) -> list[dict[str, Any]]:
    facts = client_facts(request)
    strict = set(facts.get("strict") or ())
    tools = [tool_json(t, t.name in strict) for t in request.tools]
    # A Responses client's built-in tools go as it defined them; another
    # protocol's web search as the API's own.
    kinds = {t.kind for t in request.server_tools}
    own = [d for d in facts.get("builtin") or () if builtin_kind(str(d.get("type"))) in kinds & SERVER_TOOLS]
    if own:
        return tools + own
    return tools + [web_search_json(t) for t in request.server_tools if t.kind == "web_search"][:1]


def _reasoning(request: Request) -> dict[str, Any] | None:
    reasoning, facts = request.reasoning, client_facts(request)
    summary = facts.get("summary")
    if reasoning is None:
        return None
    if reasoning.enabled is False:
        # "none" is an effort only newer models know: sent only where the
        # client itself said it.
        return {"effort": "none"} if facts.get("effort") == "none" else None
    body: dict[str, Any] = {}
    if reasoning.enabled:
        effort = (
            reasoning.effort if reasoning.effort not in (None, "none") else budget_to_effort(reasoning.budget_tokens)
        )
        body["effort"] = _EFFORT.get(effort or "", effort)
    if summary or reasoning.include_thoughts:
        body["summary"] = summary or "auto"
    return body or None


def _include(request: Request, body: dict[str, Any]) -> list[str]:
    """What the answer must carry: reasoning's encrypted content wherever the
    model reasons (with nothing stored upstream, it is the only way to give
    the reasoning back next turn), and a web search's sources."""
    include = []
    reasoned = any(isinstance(p, Thinking) and p.origin == PROTOCOL for m in request.messages for p in m.content)
    if (request.reasoning is not None and request.reasoning.enabled) or reasoned:
        include.append(ENCRYPTED)
    if any(t.get("type") in ("web_search", "web_search_preview") for t in body.get("tools", ())):
        include.append(SOURCES)
    return include


def _sampling(request: Request, body: dict[str, Any]) -> None:
    if request.max_tokens is not None:
        body["max_output_tokens"] = max(request.max_tokens, MIN_OUTPUT_TOKENS)
    # Reasoning models refuse temperature and top_p.
    if request.reasoning is None or not request.reasoning.enabled:
        if request.temperature is not None:
            body["temperature"] = min(max(request.temperature, 0.0), 2.0)
        if request.top_p is not None:
            body["top_p"] = request.top_p


def _text(request: Request) -> dict[str, Any] | None:
    verbosity = client_facts(request).get("verbosity")
    if request.response_format is None and not verbosity:
        return None
    text: dict[str, Any] = {"format": text_format_json(request.response_format)}
    if verbosity:
        text["verbosity"] = verbosity
    return text


# ---------------------------------------------------------------- answers


def _obj(value: Any) -> dict[str, Any]:
    """An object of the upstream's answer; anything else as an empty one."""
    return value if isinstance(value, dict) else {}


def _index(data: dict[str, Any]) -> int:
    index = data.get("output_index")
    return index if isinstance(index, int) else -1


def _search_use(item: dict[str, Any]) -> ServerToolUse:
    action = _obj(item.get("action"))
    query = action.get("query")
    sources = [
        SearchResult(url=s["url"], title=s.get("title"))
        for s in action.get("sources") or []
        if isinstance(s, dict) and isinstance(s.get("url"), str)
    ]
    return ServerToolUse(
        id=str(item.get("id") or new_call_id("ws_")),
        name="web_search",
        input={"query": query} if isinstance(query, str) else {},
        results=sources,
    )


def _summary_text(item: dict[str, Any]) -> str:
    """A reasoning item's summary; its raw reasoning text where a model
    gives that instead (gpt-oss)."""
    summary = [str(p.get("text", "")) for p in item.get("summary") or () if isinstance(p, dict)]
    if any(summary):
        return "\n\n".join(t for t in summary if t)
    return "".join(str(p.get("text", "")) for p in item.get("content") or () if isinstance(p, dict))


def _reasoning_signature(item: dict[str, Any]) -> str | None:
    encrypted = item.get("encrypted_content")
    if not isinstance(encrypted, str) or not encrypted:
        return None
    return pack_reasoning(item.get("id") if isinstance(item.get("id"), str) else None, encrypted)


@dataclass(slots=True)
class _Answer:
    """A Response object's output items as unified content."""

    content: list[Any] = field(default_factory=list)
    refused: bool = False
    called: bool = False

    def add(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "reasoning":
            text, signature = _summary_text(item), _reasoning_signature(item)
            if text or signature:
                self.content.append(Thinking(text=text, signature=signature, origin=PROTOCOL))
        elif kind == "message":
            for part in item.get("content") or ():
                self._message_part(part)
        elif kind in ("function_call", "custom_tool_call"):
            self.called = True
            arguments = (
                {CUSTOM_INPUT: str(item.get("input", ""))}
                if kind == "custom_tool_call"
                else loads_object(str(item.get("arguments") or ""))
            )
            self.content.append(
                ToolCall(
                    id=str(item.get("call_id") or new_call_id()),
                    name=str(item.get("name", "")),
                    arguments=arguments,
                    origin=PROTOCOL,
                )
            )
        elif kind == "web_search_call":
            self.content.append(_search_use(item))

    def _message_part(self, part: Any) -> None:
        if not isinstance(part, dict):
            return
        if part.get("type") == "refusal":
            self.refused = True
            self.content.append(Text(text=str(part.get("refusal", ""))))
        elif part.get("type") == "output_text":
            self.content.append(Text(text=str(part.get("text", ""))))
            self._cite(part.get("annotations") or ())

    def _cite(self, annotations: Any) -> None:
        """url_citation annotations as the sources of the last web search."""
        search = next((p for p in reversed(self.content) if isinstance(p, ServerToolUse)), None)
        if search is None:
            return
        known = {r.url for r in search.results}
        for note in annotations:
            if isinstance(note, dict) and note.get("type") == "url_citation" and note.get("url") not in known:
                search.results.append(SearchResult(url=str(note["url"]), title=note.get("title")))
                known.add(str(note["url"]))


def _stop(body: dict[str, Any], called: bool, refused: bool) -> StopReason:
    if body.get("status") == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        return STOP_BY_INCOMPLETE.get(str(reason), "other")
    if refused:
        return "refusal"
    return "tool_use" if called else "end_turn"


# ---------------------------------------------------------------- stream decoder


class _DecoderState(enum.Enum):
    WAITING = "waiting"  # nothing yet
    STREAMING = "streaming"  # events arriving
    ENDED = "ended"  # completed, incomplete, failed or an error event seen


@dataclass(slots=True)
class _Item:
    """An output item being streamed: its kind, its unified call index for a
    call, whether its content came as deltas, and a custom call's input."""

    kind: str
    call: int = -1
    streamed: bool = False
    pieces: list[str] = field(default_factory=list)


class _EventDecoder(RecordDecoder):
    def __init__(self) -> None:
        super().__init__(SSEDecoder())
        self.state = _DecoderState.WAITING
        self.items: dict[int, _Item] = {}  # by output_index
        self.calls = 0
        self.open_calls: list[int] = []
        self.refused = False

    def _ended(self) -> bool:
        return self.state is _DecoderState.ENDED

    def _record(self, record: SSEEvent, events: list[StreamEvent]) -> None:
        if not record.data or self.state is _DecoderState.ENDED:
            return
        data = parse_json_data(record.data)
        if not isinstance(data, dict):
            return
        kind = str(data.get("type") or record.event or "")
        if self.state is _DecoderState.WAITING:
            response = _obj(data.get("response"))
            if kind != "error":
                events.append(Start(id=response.get("id"), model=response.get("model")))
            self.state = _DecoderState.STREAMING
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, data, events)

    def _item(self, data: dict[str, Any]) -> _Item:
        return self.items.setdefault(_index(data), _Item("unknown"))

    # ------------------------------------------------------------ item lifecycle

    def _added(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        item = _obj(data.get("item"))
        self.items[_index(data)] = self._open(item, events)

    def _open(self, item: dict[str, Any], events: list[StreamEvent]) -> _Item:
        kind = str(item.get("type"))
        if kind not in ("function_call", "custom_tool_call"):
            return _Item(kind)
        call = self.calls
        self.calls += 1
        self.open_calls.append(call)
        call_id = str(item.get("call_id") or new_call_id())
        events.append(ToolCallStart(call, call_id, str(item.get("name", "")), origin=PROTOCOL))
        entry = _Item(kind, call)
        if kind == "function_call" and item.get("arguments"):
            events.append(ToolCallDelta(call, str(item["arguments"])))
            entry.streamed = True
        return entry

    def _done(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        item = _obj(data.get("item"))
        entry = self.items.pop(_index(data), None) or self._open(item, events)
        kind = str(item.get("type"))
        if kind == "reasoning":
            text, signature = _summary_text(item), _reasoning_signature(item)
            if text and not entry.streamed:
                events.append(ThinkingDelta(text))
            if signature:
                events.append(ThinkingSignature(signature, PROTOCOL))
        elif kind == "message" and not entry.streamed:
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") in ("output_text", "refusal"):
                    self.refused |= part["type"] == "refusal"
                    events.append(TextDelta(str(part.get("text") or part.get("refusal") or "")))
        elif kind == "function_call" and entry.call >= 0:
            if not entry.streamed and item.get("arguments"):
                events.append(ToolCallDelta(entry.call, str(item["arguments"])))
            self._end_call(entry.call, events)
        elif kind == "custom_tool_call" and entry.call >= 0:
            value = item.get("input") if isinstance(item.get("input"), str) else "".join(entry.pieces)
            events.append(ToolCallDelta(entry.call, dumps({CUSTOM_INPUT: value})))
            self._end_call(entry.call, events)
        elif kind == "web_search_call":
            events.append(ServerToolRun(_search_use(item)))

    def _end_call(self, call: int, events: list[StreamEvent]) -> None:
        if call in self.open_calls:
            self.open_calls.remove(call)
            events.append(ToolCallEnd(call))

    # ------------------------------------------------------------ deltas

    def _text(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        self._item(data).streamed = True
        if data.get("type") == "response.refusal.delta":
            self.refused = True
        if data.get("delta"):
            events.append(TextDelta(str(data["delta"])))

    def _thinking(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        self._item(data).streamed = True
        if data.get("delta"):
            events.append(ThinkingDelta(str(data["delta"])))

    def _summary_part(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        # Summary parts are joined by a blank line, as in a whole answer.
        if isinstance(data.get("summary_index"), int) and data["summary_index"] > 0:
            events.append(ThinkingDelta("\n\n"))

    def _arguments(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        entry = self._item(data)
        if entry.call >= 0 and data.get("delta"):
            entry.streamed = True
            events.append(ToolCallDelta(entry.call, str(data["delta"])))

    def _custom_input(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        if isinstance(data.get("delta"), str):
            self._item(data).pieces.append(data["delta"])

    # ------------------------------------------------------------ ends

    def _finished(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        response = _obj(data.get("response"))
        for call in list(self.open_calls):
            self._end_call(call, events)
        if response.get("usage"):
            events.append(UsageUpdate(usage_from(response["usage"])))
        events.append(Finish(_stop(response, self.calls > 0, self.refused)))
        self.state = _DecoderState.ENDED

    def _failed(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        response = _obj(data.get("response"))
        events.append(StreamError(error_from(response.get("error"), "the upstream response failed")))
        self.state = _DecoderState.ENDED

    def _error(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        error = data.get("error") if isinstance(data.get("error"), dict) else data
        events.append(StreamError(error_from(error)))
        self.state = _DecoderState.ENDED


_HANDLERS = {
    "response.output_item.added": _EventDecoder._added,
    "response.output_item.done": _EventDecoder._done,
    "response.output_text.delta": _EventDecoder._text,
    "response.refusal.delta": _EventDecoder._text,
    "response.reasoning_summary_text.delta": _EventDecoder._thinking,
    "response.reasoning_text.delta": _EventDecoder._thinking,
    "response.reasoning_summary_part.added": _EventDecoder._summary_part,
    "response.function_call_arguments.delta": _EventDecoder._arguments,
    "response.custom_tool_call_input.delta": _EventDecoder._custom_input,
    "response.completed": _EventDecoder._finished,
    "response.incomplete": _EventDecoder._finished,
    "response.failed": _EventDecoder._failed,
    "error": _EventDecoder._error,
}


# ---------------------------------------------------------------- the upstream half


def _tool_choice(request: Request, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    """The choice as the API takes it. A forced server tool (Claude Code
    forces its web search by name) is no function: the API names hosted
    tools by type, through `allowed_tools`."""
    choice = request.tool_choice
    if choice is None or choice.mode != "tool" or any(t.name == choice.name for t in request.tools):
        return tool_choice_json(choice, request.tools)
    kinds = {t.kind for t in request.server_tools if choice.name in (t.name, t.kind)}
    hosted = [
        t for t in tools if t.get("type") not in ("function", "custom") and builtin_kind(str(t.get("type"))) in kinds
    ]
    if not hosted:
        return "required"
    return {"type": "allowed_tools", "mode": "required", "tools": [{"type": t["type"]} for t in hosted]}


class ResponsesUpstream(UpstreamCodec):
    protocol = PROTOCOL
    forwarded_headers = ("openai-beta",)
    server_tools = SERVER_TOOLS
    document_types = frozenset({"application/pdf"})
    document_urls = True
    custom_tools = True

    def upstream_path(self, model: str, stream: bool) -> str:
        return "/responses"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        # Nothing is stored upstream: the proxy keeps conversations itself.
        body: dict[str, Any] = {"model": model, "input": _input_items(request), "store": False}
        if request.system:
            body["instructions"] = request.system
        tools = _tools(request)
        if tools:
            body["tools"] = tools
            body["tool_choice"] = _tool_choice(request, tools)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        _sampling(request, body)
        reasoning = _reasoning(request)
        if reasoning is not None:
            body["reasoning"] = reasoning
        text = _text(request)
        if text is not None:
            body["text"] = text
        include = _include(request, body)
        if include:
            body["include"] = include
        facts = client_facts(request)
        body.update({key: facts[key] for key in _SENT_ON if facts.get(key)})
        if request.stream:
            body["stream"] = True
        return body

    def left_out(self, request: Request) -> list[str]:
        missing = super().left_out(request)
        if request.stop:
            missing.append("stop sequences")
        return missing

    def passthrough_body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        # A conversation compacted on another upstream of the alias's pool
        # carries the proxy's compaction, which the API cannot read.
        sent = super().passthrough_body(body, model)
        if isinstance(sent.get("input"), list):
            sent["input"] = [_readable(item) for item in sent["input"]]
        return sent

    def rename_model(self, answer: Any, model: str) -> None:
        # A stream record names the model inside the response it carries.
        if isinstance(answer, dict) and isinstance(answer.get("response"), dict) and "model" in answer["response"]:
            answer["response"]["model"] = model
        else:
            super().rename_model(answer, model)

    def decode_response(self, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise ProxyError(502, "the upstream answer has no output")
        if body.get("status") == "failed":
            raise error_from(body.get("error"), "the upstream response failed")
        answer = _Answer()
        for item in body["output"]:
            if isinstance(item, dict):
                answer.add(item)
        return Response(
            id=body.get("id"),
            model=body.get("model"),
            content=answer.content,
            stop_reason=_stop(body, answer.called, answer.refused),
            usage=usage_from(body.get("usage")),
        )

    def stream_decoder(self) -> StreamDecoder:
        return _EventDecoder()

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        return read_error(status, body, headers)

    # ------------------------------------------------------------ count tokens

    def count_path(self, model: str) -> str | None:
        return "/responses/input_tokens"

    def encode_count_request(self, request: Request, model: str) -> dict[str, Any]:
        body = self.encode_request(request.model_copy(update={"stream": False}), model)
        return {key: value for key, value in body.items() if key in _COUNT_FIELDS}

    def decode_count_response(self, body: Any) -> int:
        if not isinstance(body, dict) or not isinstance(body.get("input_tokens"), int):
            raise ProxyError(502, "the upstream's token count has no input_tokens")
        return body["input_tokens"]

    # ------------------------------------------------------------ compaction

    def compact_path(self, model: str) -> str | None:
        return "/responses/compact"

    def encode_compact_request(self, request: Request, model: str) -> dict[str, Any]:
        body = self.encode_request(request.model_copy(update={"stream": False}), model)
        return {key: value for key, value in body.items() if key in _COMPACT_FIELDS}
