"""Pass-through streams: record by record, every split of the bytes, the
model renamed only where a record names it."""

from __future__ import annotations

import json

import pytest
from ccproxy.pipeline import Relay
from ccproxy.protocols import CODECS
from ccproxy.protocols.common import fold_system_turns
from ccproxy.unified import Message, Request, Text

CLAUDE = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-upstream","content":[]}}\n\n'
    b'event: ping\ndata: {"type":"ping"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\\"model\\": caf\xc3\xa9"}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
GEMINI = (
    b'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"modelVersion":"gemini-upstream"}\r\n\r\n'
    b'data: {"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}],"modelVersion":"gemini-upstream"}\r\n\r\n'
)
OLLAMA = b'{"model":"llama-upstream","message":{"content":"Hi"},"done":false}\n{"model":"llama-upstream","done":true}\n'


def relayed(protocol: str, data: bytes, cuts: list[int]) -> bytes:
    relay = Relay(CODECS[protocol], "my-alias")
    bounds = [0, *cuts, len(data)]
    return b"".join(relay.feed(data[a:b]) for a, b in zip(bounds, bounds[1:])) + relay.close()


@pytest.mark.parametrize("protocol,data", [("claude", CLAUDE), ("gemini", GEMINI), ("ollama", OLLAMA)])
def test_every_split_gives_the_same_records_with_the_clients_model(protocol, data):
    whole = relayed(protocol, data, [])
    for cut in range(1, len(data)):
        assert relayed(protocol, data, [cut]) == whole, f"split at {cut}"
    assert b"-upstream" not in whole and b"my-alias" in whole


def test_records_without_the_model_go_out_byte_for_byte():
    out = relayed("claude", CLAUDE, [])
    records = out.split(b"\n\n")
    assert records[1] == b'event: ping\ndata: {"type":"ping"}'
    # A text that merely mentions "model" is not a model field.
    assert json.loads(records[2].split(b"data: ", 1)[1])["delta"]["text"] == '"model": café'
    assert json.loads(records[0].split(b"data: ", 1)[1])["message"]["model"] == "my-alias"


def test_a_record_cut_off_at_the_end_is_not_passed_on():
    """Half a record would be a parse error in the client; the stream ends
    with the protocol's error event instead (relay_stream)."""
    relay = Relay(CODECS["openai"], "my-alias")
    assert relay.feed(b'data: {"model":"gpt-up') == b""
    assert relay.close() == b""


def test_secrets_in_forwarded_records_are_redacted():
    relay = Relay(CODECS["claude"], "my-alias", ["sk-ant-secret-123"])
    out = relay.feed(b'event: error\ndata: {"type":"error","error":{"message":"bad key sk-ant-secret-123"}}\n\n')
    assert b"sk-ant-secret-123" not in out and b"[redacted]" in out


def test_system_turns_fold_into_the_system_prompt_in_order():
    request = Request(model="m", system="Top.", messages=[
        Message(role="user", content=[Text(text="a")]),
        Message(role="system", content=[Text(text="One.")]),
        Message(role="user", content=[Text(text="b")]),
        Message(role="assistant", content=[Text(text="c")]),
        Message(role="system", content=[Text(text="Two.")]),
    ])
    folded = fold_system_turns(request)
    assert folded.system == "Top.\n\nOne.\n\nTwo."
    assert [(m.role, [p.text for p in m.content]) for m in folded.messages] == [("user", ["a", "b"]), ("assistant", ["c"])]
    assert fold_system_turns(folded) is folded


@pytest.mark.parametrize("ending", [b"", b"data: [DONE]", b"data: [DONE]\n\n"], ids=["left-out", "no-blank-line", "sent"])
def test_an_openai_stream_that_finished_its_answer_ends_with_done(ending):
    relay = Relay(CODECS["openai"], "my-alias")
    out = relay.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n' + ending)
    out += relay.close()
    assert out.endswith(b"\n\ndata: [DONE]\n\n") and out.count(b"[DONE]") == 1


def test_a_protocol_without_a_closing_record_gets_none():
    relay = Relay(CODECS["gemini"], "my-alias")
    record = b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]}\n\n'
    assert relay.feed(record) + relay.close() == record


@pytest.mark.parametrize("ending", [b"", b'event: message_stop\ndata: {"type": "message_stop"}\n\n'], ids=["left-out", "sent"])
def test_a_claude_stream_that_finished_its_answer_ends_with_message_stop(ending):
    relay = Relay(CODECS["claude"], "my-alias")
    finished = b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"}}\n\n'
    out = relay.feed(finished + ending) + relay.close()
    assert out.startswith(finished) and out.endswith(b'"message_stop"}\n\n') and out.count(b"message_stop") == 2
