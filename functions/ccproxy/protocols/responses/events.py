"""Unified stream events as the Responses API streams them: SSE records
`event: <type>` / `data: <json>`, numbered by sequence_number from 0.

response.created and response.in_progress open the stream; each output item
goes out as output_item.added, its content events, and output_item.done;
the stream ends with response.completed, response.incomplete (the answer
stopped short), or response.failed (an error).

An error is always sent as response.failed, after response.created if that
had not gone out: Codex reads response.failed (its error code decides
whether it retries, compacts the conversation, or stops), and ignores the
bare `error` event; the SDK's stream helper needs response.created first and
ends without a final response either way."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import ProxyError
from ...jsonutil import dumpb, loads_object
from ...unified import (
    Finish,
    RedactedThinking,
    Request,
    SearchResult,
    ServerToolRun,
    ServerToolUse,
    Start,
    StopReason,
    StreamError,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from ..base import StreamEncoder
from .answer import (
    View,
    call_item,
    call_signature_item,
    citations,
    message_item,
    output_text,
    reasoning_item,
    response_object,
    response_shell,
    search_item,
    status_of,
)
from .wire import client_encrypted, custom_input, error_code, new_id, usage_json


class _State(enum.Enum):
    FRESH = "fresh"  # nothing sent: response.created goes out first
    IDLE = "idle"  # no message or reasoning item open (calls may be)
    REASONING = "reasoning"  # a reasoning item is open, its summary streaming
    TEXT = "text"  # a message item is open, its output_text streaming
    ENDED = "ended"  # the last event (completed, incomplete or failed) went out


@dataclass(slots=True)
class _Open:
    """The message or reasoning item being streamed."""

    index: int
    id: str
    pieces: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    """A call being streamed; a custom tool's input is held until its end,
    as the upstream sends the call's arguments as fragments of JSON."""

    index: int
    id: str
    call_id: str
    name: str
    custom: bool
    pieces: list[str] = field(default_factory=list)


def _retry_hint(error: ProxyError) -> str:
    """The message of a failed response; a rate limit's says when to try
    again in the words Codex looks for."""
    if error.kind == "rate_limit" and error.retry_after and "try again in" not in error.message.lower():
        return f"{error.message} Please try again in {error.retry_after:g}s."
    return error.message


class EventEncoder(StreamEncoder):
    """One message or reasoning item open at a time (text, thinking);
    calls stay open from their start to their end, alongside."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.view = View.of(request)
        self.shell = response_shell(request, self.view)
        self.id = request.answer_id or new_id("response")
        self.created_at = 0
        self.state = _State.FRESH
        self.sequence = 0
        self.next_index = 0
        self.output: dict[int, dict[str, Any]] = {}  # finished items by output_index
        self.open: _Open | None = None
        self.thinking: list[str] = []  # the thinking block's text, shown or not
        self.calls: dict[int, _Call] = {}  # by unified call index
        self.sources: list[SearchResult] = []  # to be cited by the next message
        self.held: list[tuple[str, str | None]] = []  # signatures that came while a message was open
        self.stop: StopReason | None = None
        self.usage = Usage()

    # ------------------------------------------------------------ framing

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, **data, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumpb(data) + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        output = [self.output[i] for i in sorted(self.output)] if status != "in_progress" else []
        return response_object(
            self.request,
            self.view,
            response_id=self.id,
            status=status,
            output=output,
            created_at=self.created_at,
            shell=self.shell,
            **extra,
        )

    def _begin(self) -> bytes:
        if self.state is not _State.FRESH:
            return b""
        self.created_at = int(time.time())
        self.state = _State.IDLE
        created = self._response("in_progress", usage=None)
        return self._event("response.created", {"response": created}) + self._event(
            "response.in_progress", {"response": created}
        )

    def _item_added(self, index: int, item: dict[str, Any]) -> bytes:
        return self._event("response.output_item.added", {"output_index": index, "item": item})

    def _item_done(self, index: int, item: dict[str, Any]) -> bytes:
        self.output[index] = item
        return self._event("response.output_item.done", {"output_index": index, "item": item})

    def _new_index(self) -> int:
        index, self.next_index = self.next_index, self.next_index + 1
        return index

    # ------------------------------------------------------------ events

    def feed(self, event: StreamEvent) -> bytes:
        if self.state is _State.ENDED:
            return b""
        out = self._begin()
        match event:
            case TextDelta(text=text) if text:
                out += self._text(text)
            case ThinkingDelta(text=text) if text:
                out += self._thinking(text)
            case ThinkingSignature(signature=signature, origin=origin):
                out += self._signature(signature, origin)
            case RedactedThinking(data=data, origin=origin):
                out += self._close_item() + self._lone_reasoning(data, origin, redacted=True)
            case ToolCallStart():
                out += self._close_item() + self._call_start(event)
            case ToolCallDelta(index=index, arguments=arguments):
                out += self._call_delta(index, arguments)
            case ToolCallEnd(index=index):
                out += self._call_end(index)
            case ServerToolRun(use=use):
                out += self._close_item() + self._search(use)
            case UsageUpdate(usage=usage):
                self.usage = self.usage.merged(usage)
            case Finish(stop_reason=stop):
                self.stop = stop
            case StreamError(error=error):
                out += self._fail(error)
            case Start():
                pass
        return out

    def close(self) -> bytes:
        if self.state is _State.ENDED:
            return b""
        out = self._begin() + self._close_item()
        for index in sorted(self.calls):
            out += self._call_end(index)
        status, _ = status_of(self.stop)
        self.state = _State.ENDED
        response = self._response(status, usage=usage_json(self.usage), stop=self.stop)
        return out + self._event(f"response.{status}", {"response": response})

    def _fail(self, error: ProxyError) -> bytes:
        self.state = _State.ENDED
        failure = {"code": error_code(error), "message": _retry_hint(error)}
        response = self._response("failed", usage=usage_json(self.usage), error=failure)
        return self._event("response.failed", {"response": response})

    # ------------------------------------------------------------ message and reasoning items

    def _close_item(self) -> bytes:
        """Ends the open message or reasoning item, if any; a thinking block
        that ends unsigned is forgotten."""
        if self.state is _State.TEXT:
            return self._close_text()
        if self.state is _State.REASONING:
            return self._close_reasoning(None)
        self.thinking = []
        return b""

    def _text(self, text: str) -> bytes:
        out = b""
        if self.state is not _State.TEXT:
            out += self._close_item()
            self.open = _Open(self._new_index(), new_id("message"))
            self.state = _State.TEXT
            out += self._item_added(self.open.index, message_item(self.open.id, [], "in_progress"))
            out += self._part_event("response.content_part.added", {"part": output_text("", [])})
        assert self.open is not None
        self.open.pieces.append(text)
        return out + self._part_event("response.output_text.delta", {"delta": text, "logprobs": []})

    def _part_event(self, kind: str, data: dict[str, Any]) -> bytes:
        assert self.open is not None
        return self._event(kind, {"item_id": self.open.id, "output_index": self.open.index, "content_index": 0, **data})

    def _close_text(self) -> bytes:
        assert self.open is not None
        text, sources = "".join(self.open.pieces), self.sources
        out = b""
        for i, annotation in enumerate(citations(sources, text)):
            out += self._part_event(
                "response.output_text.annotation.added", {"annotation_index": i, "annotation": annotation}
            )
        part = output_text(text, sources)
        out += self._part_event("response.output_text.done", {"text": text, "logprobs": []})
        out += self._part_event("response.content_part.done", {"part": part})
        status = "incomplete" if status_of(self.stop)[0] == "incomplete" else "completed"
        out += self._item_done(self.open.index, message_item(self.open.id, [part], status))
        self.open, self.sources, self.state = None, [], _State.IDLE
        held, self.held = self.held, []
        return out + b"".join(self._lone_reasoning(signature, origin) for signature, origin in held)

    def _thinking(self, text: str) -> bytes:
        self.thinking.append(text)
        if not self.view.summaries:
            return b""
        out = b""
        if self.state is not _State.REASONING:
            out += self._close_text() if self.state is _State.TEXT else b""
            self.open = _Open(self._new_index(), new_id("reasoning"))
            self.state = _State.REASONING
            out += self._item_added(self.open.index, reasoning_item(self.open.id, "", None))
            out += self._summary_event("response.reasoning_summary_part.added", {"part": _summary("")})
        return out + self._summary_event("response.reasoning_summary_text.delta", {"delta": text})

    def _summary_event(self, kind: str, data: dict[str, Any]) -> bytes:
        assert self.open is not None
        return self._event(kind, {"item_id": self.open.id, "output_index": self.open.index, "summary_index": 0, **data})

    def _signature(self, signature: str, origin: str | None) -> bytes:
        """A signature ends the thinking block it signs: the open reasoning
        item, or, where the summary was not shown, an item of its own."""
        if not self.view.encrypted:
            return self._close_item()
        if self.state is _State.REASONING:
            return self._close_reasoning(client_encrypted(signature, origin))
        if self.state is _State.TEXT:
            # Signed text (Gemini signs a text part): the signature follows
            # the message, which goes on taking text meanwhile.
            self.held.append((signature, origin))
            return b""
        text, self.thinking = "".join(self.thinking), []
        return self._lone_reasoning(signature, origin, text=text)

    def _close_reasoning(self, encrypted: str | None) -> bytes:
        assert self.open is not None
        text = "".join(self.open.pieces) or "".join(self.thinking)
        out = self._summary_event("response.reasoning_summary_text.done", {"text": text})
        out += self._summary_event("response.reasoning_summary_part.done", {"part": _summary(text)})
        out += self._item_done(self.open.index, reasoning_item(self.open.id, text, encrypted))
        self.open, self.thinking, self.state = None, [], _State.IDLE
        return out

    def _lone_reasoning(self, signature: str, origin: str | None, text: str = "", redacted: bool = False) -> bytes:
        """A reasoning item with no summary, only encrypted content: for a
        client that asked for it."""
        if not self.view.encrypted:
            return b""
        index, item_id = self._new_index(), new_id("reasoning")
        encrypted = client_encrypted(signature, origin, text or None, redacted=redacted)
        return self._item_added(index, reasoning_item(item_id, "", None)) + self._item_done(
            index, reasoning_item(item_id, "", encrypted)
        )

    # ------------------------------------------------------------ calls and searches

    def _call_start(self, event: ToolCallStart) -> bytes:
        out = b""
        if event.signature and self.view.encrypted:
            index = self._new_index()
            item = call_signature_item(event.signature, event.origin)
            out += self._item_added(index, {**item, "encrypted_content": None}) + self._item_done(index, item)
        custom = event.name in self.view.custom
        call = _Call(
            self._new_index(),
            new_id("custom_tool_call" if custom else "function_call"),
            event.id,
            event.name,
            custom,
        )
        self.calls[event.index] = call
        added = call_item(call.id, call.call_id, call.name, "", custom)
        if not custom:
            added["status"] = "in_progress"
        return out + self._item_added(call.index, added)

    def _call_delta(self, index: int, arguments: str) -> bytes:
        call = self.calls.get(index)
        if call is None or not arguments:
            return b""
        call.pieces.append(arguments)
        if call.custom:
            return b""
        return self._call_event(call, "response.function_call_arguments.delta", {"delta": arguments})

    def _call_event(self, call: _Call, kind: str, data: dict[str, Any]) -> bytes:
        return self._event(kind, {"item_id": call.id, "output_index": call.index, **data})

    def _call_end(self, index: int) -> bytes:
        call = self.calls.pop(index, None)
        if call is None:
            return b""
        text = "".join(call.pieces)
        if call.custom:
            value = custom_input(loads_object(text))
            out = self._call_event(call, "response.custom_tool_call_input.delta", {"delta": value}) if value else b""
            out += self._call_event(call, "response.custom_tool_call_input.done", {"input": value})
        else:
            value = text or "{}"
            out = self._call_event(call, "response.function_call_arguments.done", {"arguments": value})
        return out + self._item_done(call.index, call_item(call.id, call.call_id, call.name, value, call.custom))

    def _search(self, use: ServerToolUse) -> bytes:
        self.sources.extend(use.results)
        if use.name != "web_search":
            return b""
        index, item_id = self._new_index(), new_id("web_search_call")
        out = self._item_added(index, search_item(item_id, None))
        for step in ("in_progress", "searching", "completed"):
            out += self._event(f"response.web_search_call.{step}", {"item_id": item_id, "output_index": index})
        return out + self._item_done(index, search_item(item_id, use))


def _summary(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}
