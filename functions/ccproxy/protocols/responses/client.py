"""The OpenAI Responses API as clients speak it (Codex among them): the
/v1/responses routes, a client's request decoded into the unified form, and
unified answers encoded as Response objects and errors in the OpenAI shape.
The stream encoder is in `events`."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from ...errors import ProxyError
from ...jsonutil import loads_object
from ...unified import (
    Document,
    Image,
    Message,
    Reasoning,
    Request,
    Response,
    ResponseFormat,
    Role,
    SearchResult,
    ServerTool,
    ServerToolUse,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from ..base import ClientCodec, ClientContext, Route, StreamEncoder
from ..common import CUSTOM_INPUT, name_tool_results, parse_data_url, validate
from ..openai.wire import error_body, model_entry, model_list
from . import kept
from .answer import View, output_items, response_object
from .compact import compacted_response
from .events import EventEncoder
from .wire import (
    PROTOCOL,
    STATE,
    SUMMARIES,
    Foreign,
    _CallOutputItem,
    _CompactionItem,
    _CustomCallItem,
    _FunctionCallItem,
    _MessageItem,
    _ReasoningItem,
    _ResponsesRequest,
    _TextIn,
    _WebSearchItem,
    builtin_kind,
    new_id,
    opaque_compaction,
    pack_reasoning,
    read_mark,
    read_summary,
    summary_text,
    usage_json,
    validate_item,
)

# ---------------------------------------------------------------- content parts


def _bad(where: str, what: str) -> ProxyError:
    return ProxyError(400, f"{where}: {what}", kind="invalid_request", param=where)


def _text(part: dict[str, Any], key: str, where: str) -> Text:
    value = part.get(key)
    if not isinstance(value, str):
        raise _bad(f"{where}.{key}", "give the text as a string")
    return Text(text=value)


def _image(part: dict[str, Any], where: str) -> Image:
    url = part.get("image_url")
    if isinstance(url, dict):  # the chat completions spelling, taken as well
        url = url.get("url")
    if not url and part.get("file_id"):
        raise _bad(
            f"{where}.file_id", "files stored with OpenAI cannot be forwarded; give image_url (a URL or data: URL)"
        )
    if not isinstance(url, str) or not url:
        raise _bad(f"{where}.image_url", "give the image's URL or data: URL")
    return parse_data_url(url)


def _file(part: dict[str, Any], where: str) -> Document:
    data, url = part.get("file_data"), part.get("file_url")
    title = part.get("filename") if isinstance(part.get("filename"), str) else None
    if isinstance(data, str) and data:
        media_type, payload = "application/pdf", data
        if data.startswith("data:"):
            header, _, payload = data[5:].partition(",")
            media_type = header.split(";", 1)[0] or media_type
        if not media_type.startswith("text/"):
            return Document(media_type=media_type, data=payload, title=title)
        try:
            text = base64.b64decode(payload, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise _bad(f"{where}.file_data", "a text file must be base64 UTF-8 text") from None
        return Document(media_type="text/plain", text=text, title=title)
    if isinstance(url, str) and url:
        return Document(url=url, title=title)
    if part.get("file_id"):
        raise _bad(f"{where}.file_id", "files stored with OpenAI cannot be forwarded; give file_data or file_url")
    raise _bad(where, "give the file as file_data (a base64 data: URL) or file_url")


# Text-bearing parts and the key of their text: input parts, and the parts
# of an assistant message sent back as history.
_TEXT_KEYS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}


def _parts(content: str | list[Any], where: str) -> list[Text | Image | Document]:
    if isinstance(content, str):
        return [Text(text=content)] if content else []
    parts: list[Text | Image | Document] = []
    for i, part in enumerate(content):
        here = f"{where}.{i}"
        if not isinstance(part, dict):
            raise _bad(here, "a content part must be an object")
        kind = part.get("type")
        if kind in _TEXT_KEYS:
            parts.append(_text(part, _TEXT_KEYS[kind], here))
        elif kind == "input_image":
            parts.append(_image(part, here))
        elif kind == "input_file":
            parts.append(_file(part, here))
        else:
            raise _bad(
                f"{here}.type",
                f"content parts of type {kind!r} are not supported; use input_text, input_image or input_file",
            )
    return parts


# ---------------------------------------------------------------- input items


class _InputReader:
    """Input items folded into unified turns: items of one role in a row make
    one turn (a function call joins the assistant's, its output the user's).
    A reasoning item that carries the signature of the call after it (a
    Gemini thought signature) holds it until that call comes."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.call_signature: Foreign | None = None
        # Tools offered in the input rather than in `tools` (Codex's code
        # mode sends its tools as an `additional_tools` item).
        self.tools: list[Any] = []

    def read(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise _bad(where, "an input item must be an object")
        kind = raw.get("type", "message")  # a message may come without a type
        if kind == "message":
            self._message(raw, where)
        elif kind == "function_call":
            call = validate_item(_FunctionCallItem, raw, where)
            arguments = call.arguments if isinstance(call.arguments, dict) else loads_object(call.arguments)
            self._append("assistant", [self._call(call.call_id, call.name, arguments)])
        elif kind == "custom_tool_call":
            custom = validate_item(_CustomCallItem, raw, where)
            self._append("assistant", [self._call(custom.call_id, custom.name, {CUSTOM_INPUT: custom.input})])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._call_output(raw, where)
        elif kind == "reasoning":
            self._reasoning(raw, where)
        elif kind == "web_search_call":
            self._web_search(raw, where)
        elif kind in ("compaction", "compaction_summary"):
            self._compaction(raw, where)
        elif kind == "additional_tools":
            tools = raw.get("tools")
            if not isinstance(tools, list):
                raise _bad(f"{where}.tools", "give the additional tools as a list")
            self.tools.extend(tools)
        elif kind == "item_reference":
            raise _bad(where, "item references name items stored with OpenAI, which ccproxy cannot read; send the item")
        else:
            raise _bad(f"{where}.type", f"input items of type {kind!r} are not supported")

    def finish(self) -> list[Message]:
        for turn in self.messages:
            if turn.role == "user" and any(isinstance(p, ToolResult) for p in turn.content):
                # Tool results first in a user turn (Anthropic requires it).
                turn.content.sort(key=lambda p: not isinstance(p, ToolResult))
            if turn.role == "assistant":
                turn.content = [p for p in turn.content if not (isinstance(p, Text) and not p.text)] or [Text(text="")]
        name_tool_results(self.messages)
        return self.messages

    def _append(self, role: Role, parts: list[Any]) -> None:
        if not parts:
            return
        if self.messages and self.messages[-1].role == role:
            self.messages[-1].content.extend(parts)
        else:
            self.messages.append(Message(role=role, content=parts))

    def _message(self, raw: dict[str, Any], where: str) -> None:
        message = validate_item(_MessageItem, raw, where)
        parts: list[Any] = _parts(message.content, f"{where}.content")
        if message.role in ("system", "developer"):
            self._append("system", [p for p in parts if isinstance(p, Text)])
        else:
            self._append("user" if message.role == "user" else "assistant", parts)

    def _call(self, call_id: str, name: str, arguments: dict[str, Any]) -> ToolCall:
        call = ToolCall(id=call_id, name=name, arguments=arguments)
        if self.call_signature is not None:
            call.signature, call.origin = self.call_signature.signature, self.call_signature.origin
            self.call_signature = None
        return call

    def _call_output(self, raw: dict[str, Any], where: str) -> None:
        item = validate_item(_CallOutputItem, raw, where)
        output = item.output
        content: list[Text | Image | Document] = []
        if isinstance(output, list):
            content = _parts(output, f"{where}.output")
        elif output:
            content = [Text(text=output)]
        self._append("user", [ToolResult(id=item.call_id, content=content)])

    def _reasoning(self, raw: dict[str, Any], where: str) -> None:
        item = validate_item(_ReasoningItem, raw, where)
        text = "\n\n".join(p.text for p in item.summary if p.text)
        if not text and item.content:
            text = "".join(str(c.get("text", "")) for c in item.content if isinstance(c, dict))
        encrypted = item.encrypted_content
        foreign = read_mark(encrypted) if encrypted else None
        if foreign is not None and foreign.on_call:
            self.call_signature = foreign
        elif foreign is not None:
            self._append(
                "assistant",
                [
                    Thinking(
                        text="" if foreign.redacted else (foreign.text if foreign.text is not None else text),
                        signature=foreign.signature,
                        redacted=foreign.redacted,
                        origin=foreign.origin,
                    )
                ],
            )
        elif encrypted:
            self._append(
                "assistant", [Thinking(text=text, signature=pack_reasoning(item.id, encrypted), origin=PROTOCOL)]
            )
        elif text:
            self._append("assistant", [Thinking(text=text)])

    def _web_search(self, raw: dict[str, Any], where: str) -> None:
        item = validate_item(_WebSearchItem, raw, where)
        action = item.action or {}
        queries = action.get("queries")
        query = action.get("query") or (queries[0] if isinstance(queries, list) and queries else None)
        sources = [
            SearchResult(url=s["url"])
            for s in action.get("sources") or []
            if isinstance(s, dict) and isinstance(s.get("url"), str)
        ]
        use = ServerToolUse(
            id=item.id or new_id("web_search_call"),
            name="web_search",
            input={"query": query} if isinstance(query, str) else {},
            results=sources,
        )
        self._append("assistant", [use])

    def _compaction(self, raw: dict[str, Any], where: str) -> None:
        """A summary the proxy made is told to the model as a system turn
        (in place where the upstream takes such turns, else in its system
        prompt); the API's own compaction is carried for a Responses
        upstream, in the assistant's turn where the API placed it."""
        item = validate_item(_CompactionItem, raw, where)
        summary = read_summary(item.encrypted_content)
        if summary is not None:
            self._append("system", [Text(text=summary_text(summary))])
        else:
            self._append("assistant", [opaque_compaction(item.encrypted_content)])


def _decode_input(value: str | list[Any]) -> tuple[list[Message], list[Any]]:
    """The input's turns, and the tools it offers itself."""
    if isinstance(value, str):
        return ([Message(role="user", content=[Text(text=value)])] if value else []), []
    reader = _InputReader()
    for i, item in enumerate(value):
        reader.read(item, f"input.{i}")
    return reader.finish(), reader.tools


# ---------------------------------------------------------------- tools and options


# What a built-in tool's type looks like (web_search, web_search_preview,
# code_interpreter, mcp, ...): new ones are taken as they come, anything
# else is refused as the API refuses it.
_BUILTIN_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")


class _Tools:
    """The client's tools: its own (function and custom) as unified tools,
    the built-in ones the API runs as server tools. The built-in tools'
    definitions and the names of the strict function tools are kept for the
    answer's echo and for a Responses upstream."""

    def __init__(self, entries: list[dict[str, Any]] | None) -> None:
        self.tools: list[Tool] = []
        self.server: list[ServerTool] = []
        self.builtin: list[dict[str, Any]] = []
        self.strict: list[str] = []
        for i, entry in enumerate(entries or []):
            self._read(entry, f"tools.{i}")

    def _read(self, entry: Any, where: str) -> None:
        if not isinstance(entry, dict):
            raise _bad(where, "a tool must be an object")
        kind = entry.get("type")
        if kind == "namespace":
            # A namespace groups tools; the model calls them by their own
            # names (clients take the call without its namespace), so they
            # join the others, the first of a name winning.
            inner = entry.get("tools")
            if not isinstance(inner, list):
                raise _bad(f"{where}.tools", "give the namespace's tools as a list")
            for i, tool in enumerate(inner):
                self._read(tool, f"{where}.tools.{i}")
            return
        if kind in ("function", "custom"):
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise _bad(f"{where}.name", "a tool needs a name")
            if any(tool.name == name for tool in self.tools):
                return
            description = entry.get("description") if isinstance(entry.get("description"), str) else None
            if kind == "custom":
                fmt = entry.get("format")
                if fmt is not None and not isinstance(fmt, dict):
                    raise _bad(f"{where}.format", "give the format as an object ({'type': 'text'} or a grammar)")
                self.tools.append(
                    Tool(name=name, description=description, kind="custom", format=fmt or {"type": "text"})
                )
                return
            parameters = entry.get("parameters") or {"type": "object", "properties": {}}
            if not isinstance(parameters, dict):
                raise _bad(f"{where}.parameters", "give a JSON Schema object")
            self.tools.append(Tool(name=name, description=description, parameters=parameters))
            if entry.get("strict"):
                self.strict.append(name)
        elif isinstance(kind, str) and _BUILTIN_TYPE.match(kind):
            # The definition stays out of ServerTool.wire: an upstream of
            # another protocol would send a wire definition as it is.
            options = {k: v for k, v in entry.items() if k != "type"}
            self.server.append(ServerTool(kind=builtin_kind(kind), name=kind, options=options))
            self.builtin.append(entry)
        else:
            raise _bad(f"{where}.type", "give the tool's type: function, custom, or a built-in tool")


_CHOICE_MODES: dict[str, Literal["auto", "any", "none"]] = {"auto": "auto", "none": "none", "required": "any"}


def _decode_tool_choice(value: str | dict[str, Any] | None) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        mode = _CHOICE_MODES.get(value)
        if mode is None:
            raise _bad("tool_choice", f"{value!r} is not one of auto, none, required")
        return ToolChoice(mode=mode)
    kind = value.get("type")
    if kind in ("function", "custom"):
        if not isinstance(value.get("name"), str):
            raise _bad("tool_choice.name", "name the tool the model must call")
        return ToolChoice(mode="tool", name=value["name"])
    if kind == "allowed_tools":
        return ToolChoice(mode="any" if value.get("mode") == "required" else "auto")
    # A built-in tool to be used (web_search_preview, mcp, shell...): the
    # model is left to choose.
    return ToolChoice(mode="auto")


def _decode_format(text: _TextIn | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return ResponseFormat(type="json_object")
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _bad("text.format.schema", "give the JSON Schema the answer must follow")
        return ResponseFormat(type="json_schema", schema=schema, name=fmt.get("name"), strict=fmt.get("strict"))
    raise _bad("text.format.type", f"{fmt.get('type')!r} is not one of text, json_object, json_schema")


def _decode_reasoning(wire: _ResponsesRequest) -> Reasoning | None:
    if wire.reasoning is None:
        return None
    summary = wire.reasoning.summary or wire.reasoning.generate_summary
    shown = summary in SUMMARIES
    effort = wire.reasoning.effort
    if effort is None:
        return Reasoning(include_thoughts=shown)
    if effort == "none":
        return Reasoning(enabled=False, include_thoughts=False)
    return Reasoning(enabled=True, effort=effort, include_thoughts=shown)


def _facts(wire: _ResponsesRequest, tools: _Tools) -> dict[str, Any]:
    """What the answer echoes and a Responses upstream is sent of the
    client's request beyond the unified fields."""
    reasoning, text = wire.reasoning, wire.text
    facts = {
        "include": wire.include,
        "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        "effort": reasoning.effort if reasoning else None,
        "verbosity": text.verbosity if text else None,
        "strict": tools.strict,
        "builtin": tools.builtin,
        "metadata": wire.metadata,
        "prompt_cache_key": wire.prompt_cache_key,
        "safety_identifier": wire.safety_identifier,
        "user": wire.user,
        "service_tier": wire.service_tier,
    }
    return {key: value for key, value in facts.items() if value}


def _decode(body: Any) -> Request:
    wire = validate(_ResponsesRequest, body)
    messages, offered = _decode_input(wire.input)
    if not messages and not wire.previous_response_id:
        raise _bad("input", "give the input: a string, or a list of input items")
    tools = _Tools((wire.tools or []) + offered)
    return Request(
        model=wire.model,
        system=wire.instructions or None,
        messages=messages,
        tools=tools.tools,
        server_tools=tools.server,
        tool_choice=_decode_tool_choice(wire.tool_choice),
        parallel_tool_calls=wire.parallel_tool_calls,
        max_tokens=wire.max_output_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        response_format=_decode_format(wire.text),
        reasoning=_decode_reasoning(wire),
        stream=bool(wire.stream),
        client_state={STATE: _facts(wire, tools)},
        continues=wire.previous_response_id,
        store=wire.store is not False,  # the API stores unless told not to
        # Named now, so that the kept record and every event of the answer agree.
        answer_id=new_id("response"),
    )


# ---------------------------------------------------------------- the client half


class ResponsesClient(ClientCodec):
    protocol = PROTOCOL
    # Longer than the chat completions root "/v1": a path under it that no
    # route has is answered in this protocol's shape.
    path_roots = ("/v1/responses",)
    routes = (
        Route("POST", r"/v1/responses", "generate"),
        Route("POST", r"/v1/responses/input_tokens", "count_tokens"),
        Route("GET", r"/v1/responses/(?P<id>[^/]+)", "get_kept"),
        Route("DELETE", r"/v1/responses/(?P<id>[^/]+)", "delete_kept"),
        Route("GET", r"/v1/responses/(?P<id>[^/]+)/input_items", "kept_input"),
        Route("POST", r"/v1/responses/compact", "compact"),
        Route("POST", r"/v1/responses/(?P<id>[^/]+)/cancel", "cancel_kept", body=False),
    )

    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        return _decode(body)

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        view = View.of(request)
        status, output = output_items(response, view)
        return response_object(
            request,
            view,
            response_id=request.answer_id or new_id("response"),
            status=status,
            output=output,
            usage=usage_json(response.usage),
            stop=response.stop_reason,
        )

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return EventEncoder(request)

    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        return error_body(error)

    # ------------------------------------------------------------ models

    def encode_model_list(self, names: list[str]) -> dict[str, Any]:
        return model_list(names)

    def encode_model(self, name: str) -> dict[str, Any]:
        return model_entry(name)

    # ------------------------------------------------------------ count tokens

    def decode_count_request(self, body: Any, ctx: ClientContext) -> Request:
        request = _decode(body)
        request.stream = False
        return request

    def encode_count_response(self, tokens: int) -> dict[str, Any]:
        return {"object": "response.input_tokens", "input_tokens": tokens}

    # ------------------------------------------------------------ kept answers

    def unknown_kept(self, answer_id: str) -> ProxyError:
        return kept.unknown(answer_id)

    def encode_deleted(self, answer_id: str) -> dict[str, Any]:
        return kept.deleted(answer_id)

    def encode_kept_input(self, messages: list[Message], answer_id: str) -> dict[str, Any]:
        return kept.input_item_list(messages, answer_id)

    def cancel_refusal(self, answer_id: str) -> ProxyError:
        return kept.not_cancellable(answer_id)

    # ------------------------------------------------------------ compaction

    def decode_compact_request(self, body: Any, ctx: ClientContext) -> Request:
        if isinstance(body, dict) and body.get("input") is None:
            body = {k: v for k, v in body.items() if k != "input"}  # the SDK's input=None
        request = _decode(body)
        # A compaction is answered whole and is not a response: nothing of it is kept.
        request.stream, request.store, request.answer_id = False, False, None
        return request

    def encode_compacted(self, summary: Response, request: Request) -> dict[str, Any]:
        return compacted_response(summary, request)
