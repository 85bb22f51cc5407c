"""What an outsider fills is capped: a client's body, a stream record."""

from __future__ import annotations

import httpx
import pytest
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.errors import ProxyError
from ccproxy.framing import NDJSONDecoder, SSEDecoder
from ccproxy.pipeline import Relay
from ccproxy.protocols import CODECS
from ccproxy.stores.secrets import NoSecrets

from tests.support.server import serving


@pytest.mark.parametrize("decoder", [SSEDecoder(max_record=1024), NDJSONDecoder(max_record=1024)],
                         ids=["sse", "ndjson"])
def test_a_record_without_end_is_refused_at_its_cap(decoder):
    decoder.feed(b"data: " if isinstance(decoder, SSEDecoder) else b"")
    with pytest.raises(ProxyError) as caught:
        for _ in range(20):
            decoder.feed(b"x" * 100)
    assert caught.value.status == 502 and "1024" in caught.value.message


def test_an_sse_event_of_many_lines_counts_as_one_record():
    decoder = SSEDecoder(max_record=1024)
    with pytest.raises(ProxyError):
        for _ in range(30):
            decoder.feed(b"data: " + b"x" * 60 + b"\n")


def test_records_under_the_cap_pass_however_many():
    decoder = SSEDecoder(max_record=1024)
    events = [e for _ in range(1000) for e in decoder.feed(b"data: " + b"x" * 500 + b"\n\n")]
    assert len(events) == 1000


def test_the_relay_refuses_a_record_over_its_cap():
    relay = Relay(CODECS["openai"], "m", max_record=1024)
    with pytest.raises(ProxyError):
        relay.feed(b"data: " + b"x" * 2000)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_request_body_over_its_cap_is_a_413_in_the_protocols_shape(declared):
    config = parse({"providers": {}, "groups": {"default": {"models": {}}}, "limits": {"request_bytes": 1024}}, "t")
    app = create_app(Settings(config=config, secrets=NoSecrets(), open_when_no_keys=True))
    body = b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "' + b"x" * 4000 + b'"}]}'
    with serving(app) as server:
        content = body if declared else iter([body[:2000], body[2000:]])
        response = httpx.post(server.url + "/v1/messages", content=content, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


# Each protocol's generate route and where its error's message is.
DEEP_ROUTES = [
    ("/v1/messages", lambda body: body["error"]["message"]),
    ("/v1/chat/completions", lambda body: body["error"]["message"]),
    ("/v1/responses", lambda body: body["error"]["message"]),
    ("/v1beta/models/m:generateContent", lambda body: body["error"]["message"]),
    ("/api/chat", lambda body: body["error"]),
]


@pytest.mark.parametrize("depth", [201, 500, 5000])
@pytest.mark.parametrize("path,message_of", DEEP_ROUTES, ids=[path for path, _ in DEEP_ROUTES])
def test_a_request_body_nested_too_deep_is_a_400_in_the_protocols_shape(path, message_of, depth):
    # Deep JSON is a 400 where it is read, before anything (a kept
    # conversation, a record) would try to write it again.
    config = parse({"providers": {}, "groups": {"default": {"models": {}}}}, "t")
    app = create_app(Settings(config=config, secrets=NoSecrets(), open_when_no_keys=True))
    arguments = '{"a":' * depth + "1" + "}" * depth
    body = '{"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": ' + arguments + "}]}"
    with serving(app) as server:
        response = httpx.post(server.url + path, content=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 400
    assert message_of(response.json()) == "the request body is JSON nested more than 200 levels deep"
