import pytest
from ccproxy.errors import ProxyError
from ccproxy.framing import NDJSONDecoder, SSEDecoder

SSE = (
    "event: message_start\r\ndata: {\"a\": \"ünï 🎉\"}\r\n\r\n"
    ": keepalive comment\n\n"
    "data: line one\ndata: line two\n\n"
    "event: ping\ndata:{}\n\n"
).encode()
EXPECTED_SSE = [
    ("message_start", '{"a": "ünï 🎉"}'),
    (None, "line one\nline two"),
    ("ping", "{}"),
]


def _sse_events(chunks):
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)] + decoder.close()
    return [(e.event, e.data) for e in events]


def test_sse_whole():
    assert _sse_events([SSE]) == EXPECTED_SSE


def test_sse_split_at_every_byte():
    assert _sse_events([SSE[i : i + 1] for i in range(len(SSE))]) == EXPECTED_SSE


@pytest.mark.parametrize("cut", range(1, len(SSE)))
def test_sse_split_in_two_anywhere(cut):
    assert _sse_events([SSE[:cut], SSE[cut:]]) == EXPECTED_SSE


def test_sse_last_event_without_blank_line_is_dispatched_at_close():
    assert _sse_events([b"data: {\"x\":1}"]) == [(None, '{"x":1}')]


NDJSON = '{"a": "ünï 🎉"}\n\n{"b": 2}\r\n{"c": 3}'.encode()


def _nd(chunks):
    decoder = NDJSONDecoder()
    return [v for chunk in chunks for v in decoder.feed(chunk)] + decoder.close()


def test_ndjson_split_at_every_byte():
    expected = [{"a": "ünï 🎉"}, {"b": 2}, {"c": 3}]
    assert _nd([NDJSON]) == expected
    assert _nd([NDJSON[i : i + 1] for i in range(len(NDJSON))]) == expected
    for cut in range(1, len(NDJSON)):
        assert _nd([NDJSON[:cut], NDJSON[cut:]]) == expected


def test_ndjson_garbage_is_an_upstream_fault():
    with pytest.raises(ProxyError) as caught:
        _nd([b"data: {}\n"])
    assert caught.value.status == 502
