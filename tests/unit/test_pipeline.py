"""pipeline: deltas that arrived together go out together, nothing waits."""

import asyncio

from ccproxy.pipeline import LastPiece, coalesce, convert_stream
from ccproxy.protocols import CODECS
from ccproxy.protocols.base import ClientContext
from ccproxy.unified import (
    Start,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UsageUpdate,
)


def test_runs_of_the_same_delta_are_joined_in_order():
    usage = UsageUpdate(Usage(output_tokens=3))
    events = [
        Start("m"), TextDelta("a"), TextDelta("b"), TextDelta("c"), usage, TextDelta("d"),
        ThinkingDelta("x"), ThinkingDelta("y"), ToolCallStart(0, "call_1", "f"), ToolCallDelta(0, '{"k":'),
        ToolCallDelta(0, "1}"), ToolCallDelta(1, "["), ToolCallEnd(0),
    ]
    assert coalesce(events) == [
        Start("m"), TextDelta("abc"), usage, TextDelta("d"), ThinkingDelta("xy"),
        ToolCallStart(0, "call_1", "f"), ToolCallDelta(0, '{"k":1}'), ToolCallDelta(1, "["), ToolCallEnd(0),
    ]


def test_a_lone_event_is_left_as_it_is():
    events = [TextDelta("only")]
    assert coalesce(events) is events


def openai_chunk(text: str) -> bytes:
    return b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
           b'"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % text.encode()


def test_a_stream_joins_what_one_read_brought_but_never_waits_for_the_next():
    reads = [openai_chunk("Hel") + openai_chunk("lo"), openai_chunk(" world"),
             b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
             b'"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n']

    async def chunks():
        for read in reads:
            yield read

    async def run():
        claude = CODECS["claude"]
        request = claude.decode_request({"model": "m", "max_tokens": 10, "stream": True,
                                         "messages": [{"role": "user", "content": "hi"}]}, ClientContext())
        return [piece async for piece in convert_stream(chunks(), CODECS["openai"].stream_decoder(),
                                                        claude.stream_encoder(request))]

    pieces = asyncio.run(run())
    assert len(pieces) == 3  # one per read: nothing held back for the next read
    assert b'"text":"Hello"' in pieces[0] and pieces[0].count(b"event: content_block_delta") == 1
    assert b'"text":" world"' in pieces[1]
    assert type(pieces[-1]) is LastPiece and b"message_stop" in pieces[-1]
