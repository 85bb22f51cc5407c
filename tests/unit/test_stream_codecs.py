"""Stream decoders and encoders: split anywhere, the same events come out."""

from __future__ import annotations

import json

import pytest
from ccproxy.errors import ProxyError
from ccproxy.pipeline import CheckedDecoder, _convert
from ccproxy.protocols import CODECS
from ccproxy.unified import (
    Accumulator,
    Finish,
    Request,
    Start,
    StreamError,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UsageUpdate,
)

TEXT = "Grüße aus 東京 ☀️"


def sse(*records: dict, events: bool = False, crlf: bool = False) -> bytes:
    sep = "\r\n" if crlf else "\n"
    out = ""
    for record in records:
        if events:
            out += f"event: {record['type']}{sep}"
        out += "data: " + json.dumps(record, ensure_ascii=False) + sep + sep
    return out.encode()


OPENAI_STREAM = sse(
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": TEXT}}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 5}}},
) + b"data: [DONE]\n\n"

CLAUDE_STREAM = sse(
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m", "usage": {"input_tokens": 16, "cache_read_input_tokens": 5, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "ping"},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": TEXT}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}},
    {"type": "content_block_stop", "index": 3},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
    events=True,
)

GEMINI_STREAM = sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]}}], "responseId": "r1", "modelVersion": "m"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": TEXT}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_time", "args": {}}}]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 21, "candidatesTokenCount": 6, "thoughtsTokenCount": 3, "cachedContentTokenCount": 5}},
    crlf=True,
)

OLLAMA_STREAM = b"".join(
    json.dumps(line, ensure_ascii=False).encode() + b"\n"
    for line in (
        {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
        {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": TEXT}, "done": False},
        {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"index": 1, "name": "get_time", "arguments": {}}}]}, "done": False},
        {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
         "prompt_eval_count": 21, "eval_count": 9},
    )
)

KNOWN_IDS = {"call_1", "call_2", "call_a", "toolu_1", "toolu_2"}
STREAMS = {"openai": OPENAI_STREAM, "claude": CLAUDE_STREAM, "gemini": GEMINI_STREAM, "ollama": OLLAMA_STREAM}


def decode(protocol: str, pieces: list[bytes]) -> list:
    decoder = CODECS[protocol].stream_decoder()
    events = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events


def normalised(events: list) -> list:
    """Events with text deltas joined and minted ids blanked, so that
    different splits of one stream compare equal."""
    out: list = []
    for event in events:
        if isinstance(event, ToolCallStart) and event.id not in KNOWN_IDS:
            event = ToolCallStart(event.index, "<minted>", event.name, event.signature, event.origin)
        if out and type(event) in (TextDelta, ThinkingDelta, ToolCallDelta) and type(out[-1]) is type(event):
            if not isinstance(event, ToolCallDelta) or event.index == out[-1].index:
                joined = out[-1].text + event.text if not isinstance(event, ToolCallDelta) else None
                if joined is not None:
                    out[-1] = type(event)(joined)
                else:
                    out[-1] = ToolCallDelta(event.index, out[-1].arguments + event.arguments)
                continue
        out.append(event)
    return out


@pytest.mark.parametrize("protocol", STREAMS)
def test_every_two_way_split_gives_the_same_events(protocol):
    stream = STREAMS[protocol]
    whole = normalised(decode(protocol, [stream]))
    assert not any(isinstance(e, StreamError) for e in whole), whole
    for cut in range(1, len(stream)):
        assert normalised(decode(protocol, [stream[:cut], stream[cut:]])) == whole, f"cut at byte {cut}"


@pytest.mark.parametrize("protocol", STREAMS)
def test_byte_at_a_time_gives_the_same_answer(protocol):
    stream = STREAMS[protocol]
    accumulated = Accumulator()
    for event in decode(protocol, [stream[i : i + 1] for i in range(len(stream))]):
        accumulated.add(event)
    response = accumulated.response
    assert "".join(p.text for p in response.content if p.type == "text") == TEXT
    assert "".join(p.text for p in response.content if p.type == "thinking") == "hmm"
    calls = [(p.name, p.arguments) for p in response.content if p.type == "tool_call"]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert response.stop_reason == "tool_use"
    assert response.usage.input_tokens == 21
    assert response.usage.output_tokens == 9


def test_gemini_signature_and_usage_arithmetic():
    events = decode("gemini", [GEMINI_STREAM])
    start = next(e for e in events if isinstance(e, ToolCallStart) and e.name == "get_weather")
    assert (start.signature, start.origin) == ("c2ln", "gemini")
    usage = [e for e in events if isinstance(e, UsageUpdate)][-1].usage
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.cache_read_tokens) == (21, 9, 3, 5)
    ids = [e.id for e in events if isinstance(e, ToolCallStart)]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_claude_usage_counts_cached_tokens_in_the_prompt():
    events = decode("claude", [CLAUDE_STREAM])
    usage = Usage()
    for event in events:
        if isinstance(event, UsageUpdate):
            usage = usage.merged(event.usage)
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (21, 5, 9)
    assert ThinkingSignature("c2ln", "claude") in events


@pytest.mark.parametrize("protocol", STREAMS)
def test_a_stream_cut_short_ends_in_an_error(protocol):
    stream = STREAMS[protocol]
    cut = stream[: len(stream) // 2]
    events = decode(protocol, [cut])
    assert isinstance(events[-1], StreamError)
    assert events[-1].error.status == 502


IN_STREAM_ERRORS = {
    "openai": b'data: {"error":{"message":"boom","type":"server_error"}}\n\n',
    "claude": b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"boom"}}\n\n',
    "gemini": b'data: {"error":{"code":503,"message":"boom","status":"UNAVAILABLE"}}\r\n\r\n',
    "ollama": b'{"error":"boom"}\n',
}


@pytest.mark.parametrize("protocol", STREAMS)
def test_an_upstream_error_in_the_stream_becomes_a_stream_error(protocol):
    events = decode(protocol, [IN_STREAM_ERRORS[protocol]])
    errors = [e for e in events if isinstance(e, StreamError)]
    assert len(errors) == 1 and errors[0].error.message == "boom"


# ---------------------------------------------------------------- encoders

UNIFIED_EVENTS = [
    Start(id="x", model="upstream-model"),
    ThinkingDelta("hm"),
    ThinkingDelta("m"),
    ThinkingSignature("c2ln", "claude"),
    TextDelta("Grüße "),
    TextDelta("aus 東京 ☀️"),
    ToolCallStart(0, "call:weird.id|1", "get_weather"),
    ToolCallDelta(0, '{"city":'),
    ToolCallDelta(0, '"Paris"}'),
    ToolCallEnd(0),
    ToolCallStart(1, "call_2", "get_time"),
    ToolCallEnd(1),
    Finish("tool_use"),
    UsageUpdate(Usage(input_tokens=21, output_tokens=9, cache_read_tokens=5)),
]


def encode(protocol: str, events: list, request: Request) -> bytes:
    encoder = CODECS[protocol].stream_encoder(request)
    return b"".join(encoder.feed(e) for e in events) + encoder.close()


def request_for(protocol: str, **extra) -> Request:
    state = {"include_thoughts": True} if protocol == "gemini" else {}
    return Request(model="client-alias", stream=True, client_state=state, **extra)


def test_openai_encoder_follows_the_chunk_rules():
    body = encode("openai", UNIFIED_EVENTS, request_for("openai", stream_usage=True)).decode()
    records = [r[6:] for r in body.split("\n\n") if r]
    assert records[-1] == "[DONE]"
    chunks = [json.loads(r) for r in records[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "client-alias" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert sum("role" in d for d in deltas) == 1
    fragments = [f for d in deltas for f in d.get("tool_calls", [])]
    assert [f["index"] for f in fragments if "id" in f] == [0, 1]
    assert all(len(f["id"]) <= 40 for f in fragments if "id" in f)
    assert sum("name" in f.get("function", {}) for f in fragments) == 2
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish[0]["choices"][0]["delta"] == {} and finish[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 21
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Grüße aus 東京 ☀️"


def test_openai_encoder_sends_no_usage_unless_asked():
    body = encode("openai", UNIFIED_EVENTS, request_for("openai", stream_usage=False)).decode()
    chunks = [json.loads(r[6:]) for r in body.split("\n\n") if r and r != "data: [DONE]"]
    assert all("usage" not in c for c in chunks)


def test_claude_encoder_numbers_blocks_and_closes_each():
    body = encode("claude", UNIFIED_EVENTS, request_for("claude")).decode()
    events = []
    for record in body.strip().split("\n\n"):
        name_line, data_line = record.split("\n")
        data = json.loads(data_line[6:])
        assert name_line == "event: " + data["type"]
        events.append(data)
    assert events[0]["type"] == "message_start" and events[0]["message"]["content"] == []
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [e["index"] for e in starts] == list(range(len(starts)))
    assert [e["content_block"]["type"] for e in starts] == ["thinking", "text", "tool_use", "tool_use"]
    assert starts[2]["content_block"]["id"] == "call_weird_id_1"
    open_blocks = 0
    for e in events:
        open_blocks += e["type"] == "content_block_start"
        open_blocks -= e["type"] == "content_block_stop"
        assert open_blocks in (0, 1), "a block opened before the previous one closed"
    delta = [e for e in events if e["type"] == "message_delta"][0]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 16, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5}
    assert events[-1]["type"] == "message_stop"


def test_gemini_encoder_sends_whole_calls_and_a_final_part():
    body = encode("gemini", UNIFIED_EVENTS, request_for("gemini")).decode()
    assert "event:" not in body and "[DONE]" not in body
    chunks = [json.loads(r[6:]) for r in body.split("\r\n\r\n") if r]
    for chunk in chunks:
        parts = chunk["candidates"][0]["content"]["parts"]
        assert parts and all(p for p in parts)
    calls = [p["functionCall"] for c in chunks for p in c["candidates"][0]["content"]["parts"] if "functionCall" in p]
    assert [(c["name"], c["args"]) for c in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["promptTokenCount"] == 21


def test_ollama_encoder_writes_ndjson_with_role_on_every_line():
    body = encode("ollama", UNIFIED_EVENTS, request_for("ollama")).decode()
    assert "\n\n" not in body
    lines = [json.loads(line) for line in body.splitlines()]
    assert all(line["message"]["role"] == "assistant" for line in lines)
    calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Paris"}, {}]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (21, 9)


@pytest.mark.parametrize("protocol", STREAMS)
def test_an_error_event_ends_the_client_stream_in_its_protocol(protocol):
    events = [Start(), TextDelta("partial"), StreamError(ProxyError(503, "upstream fell over"))]
    request = request_for(protocol)
    encoder = CODECS[protocol].stream_encoder(request)
    out, errored = _convert(events, encoder, None)
    out += encoder.close()
    assert errored
    assert b"upstream fell over" in out
    assert b"[DONE]" not in out and b"message_stop" not in out and b'"done":true' not in out


# A number where a stream's text belongs, after a good start where the protocol needs one.
WRONG_TYPE_RECORDS = {
    "openai": b'data: {"id":"c","choices":[{"index":0,"delta":{"content":5}}]}\n\n',
    "claude": b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"x","usage":{}}}\n\n'
              b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
              b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}\n\n',
    "gemini": b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":5}]},"index":0}]}\r\n\r\n',
    "ollama": b'{"model":"m","message":{"role":"assistant","content":5},"done":false}\n',
}


@pytest.mark.parametrize("protocol", WRONG_TYPE_RECORDS)
def test_a_stream_value_of_the_wrong_type_is_the_upstreams_fault(protocol):
    decoder = CheckedDecoder(CODECS[protocol].stream_decoder())
    with pytest.raises(ProxyError) as caught:
        decoder.feed(WRONG_TYPE_RECORDS[protocol])
    assert caught.value.status == 502 and "TextDelta.text is int" in caught.value.message


@pytest.mark.parametrize("done", ["[[]]", '"yes"', "1"])
def test_an_ollama_line_whose_done_is_not_a_boolean_is_the_upstreams_fault(done):
    decoder = CheckedDecoder(CODECS["ollama"].stream_decoder())
    with pytest.raises(ProxyError) as caught:
        decoder.feed(b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":' + done.encode() + b"}\n")
    assert caught.value.status == 502 and "done" in caught.value.message
