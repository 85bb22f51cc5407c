"""The parser applied to an upstream's unified answer, streamed
(`CompatStream`) or whole (`parse_response`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..jsonutil import loads_object
from ..unified import (
    Finish,
    Response,
    ServerToolUse,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from .parser import CompatParser

# Stop reasons that mean "the model simply stopped": after a text call they
# become tool_use, as a native upstream would have said. max_tokens and the
# rest say something the client must still hear.
_NATURAL_STOPS = frozenset({"end_turn", "stop_sequence"})


class CompatStream:
    """Runs an upstream's unified stream through a CompatParser.

    Text goes through the parser; everything else (thinking, usage, native
    calls) passes untouched. At Finish the parser is flushed, and if the model
    called a tool a natural stop becomes `tool_use`, as a native upstream
    would have reported it.
    """

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.parser = CompatParser(tools)

    def feed(self, event: StreamEvent) -> list[StreamEvent]:
        match event:
            case TextDelta(text=text):
                return self.parser.feed(text)
            case Finish(stop_reason=reason):
                events = self.parser.close()
                if self.parser.calls and reason in _NATURAL_STOPS:
                    event = Finish(stop_reason="tool_use")
                return [*events, event]
            case StreamError():
                return [*self.parser.close(), event]
            case ToolCallStart(index=index):
                # A native call (the model has some support after all): the
                # parser's own calls are numbered after it.
                self.parser.next_index = max(self.parser.next_index, index + 1)
                return [event]
            case _:
                return [event]

    def close(self) -> list[StreamEvent]:
        """What the parser still holds, for a stream that ended without Finish."""
        return self.parser.close()


def wrap_stream(events: Iterable[StreamEvent], tools: Sequence[Tool]) -> Iterator[StreamEvent]:
    """`CompatStream` over a whole iterable of events."""
    stream = CompatStream(tools)
    for event in events:
        yield from stream.feed(event)
    yield from stream.close()


def parse_response(response: Response, tools: Sequence[Tool]) -> Response:
    """A whole answer with its text calls turned into ToolCall parts."""
    parser = CompatParser(tools)
    content: list[Text | Thinking | ToolCall | ServerToolUse] = []
    pending: dict[int, tuple[str, str, list[str]]] = {}

    def fold(events: list[StreamEvent]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                if content and isinstance(content[-1], Text):
                    content[-1] = Text(text=content[-1].text + event.text)
                else:
                    content.append(Text(text=event.text))
            elif isinstance(event, ToolCallStart):
                pending[event.index] = (event.id, event.name, [])
            elif isinstance(event, ToolCallDelta):
                pending[event.index][2].append(event.arguments)
            elif isinstance(event, ToolCallEnd):
                call_id, name, chunks = pending.pop(event.index)
                content.append(ToolCall(id=call_id, name=name, arguments=loads_object("".join(chunks))))

    for part in response.content:
        if isinstance(part, Text):
            fold(parser.feed(part.text))
        else:
            if isinstance(part, ToolCall):
                parser.next_index += 1
            content.append(part.model_copy(deep=True))
    fold(parser.close())
    update: dict[str, Any] = {"content": content}
    if parser.calls and response.stop_reason in _NATURAL_STOPS:
        update.update(stop_reason="tool_use", stop_sequence=None)
    return response.model_copy(update=update, deep=True)
