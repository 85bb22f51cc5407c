"""Exchange records survive any text: a lone UTF-16 surrogate (a client's
`"\\ud800"` escape, a truncated emoji) is stored escaped and reads back."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ccproxy.exchange import Exchange, redact
from ccproxy.jsonutil import dumpb, dumps, loads
from ccproxy.keys import REDACTED
from ccproxy.stores.logs import DirectorySink, S3Sink, decode, encode

SECRET = "sk-test-0123456789abcdef"
LONE = "\ud800"


def _exchange() -> Exchange:
    exchange = Exchange(route="POST /v1/messages", client_protocol="claude", group="default", limit=100_000)
    # As the client sent it: the JSON escape, and (for good measure) the
    # surrogate's bytes as a lenient encoder would write them.
    exchange.client_request.add(b'{"system":"be brief \\ud800","messages":[{"role":"user","content":"hi ' + SECRET.encode() + b'"}]}')
    exchange.client_request.add(LONE.encode("utf-8", "surrogatepass"))
    exchange.system = f"be brief {LONE}"  # as parsed from that escape
    exchange.final = {"text": "half an emoji: \ud83d and caf\u00e9", "thinking": "", "tool_calls": [], "stop_reason": "end"}
    exchange.failed(502, f"upstream said {SECRET} {LONE}")
    return exchange


def test_a_record_with_a_lone_surrogate_is_written_and_reads_back(tmp_path: Path) -> None:
    record = _exchange().record([SECRET])
    sink = DirectorySink(tmp_path)
    assert sink.safe_write(record)
    (key,) = sink.keys()
    raw = gzip.decompress((tmp_path / key).read_bytes())
    raw.decode("utf-8")  # valid UTF-8, strictly
    back = json.loads(raw)
    assert back == sink.read(key) == record
    assert back["system"] == f"be brief {LONE}"
    assert back["final"]["text"] == "half an emoji: \ud83d and caf\u00e9"
    assert "\\ud800" in back["client_request"]
    # Secrets are still replaced wherever they appear.
    assert SECRET not in raw.decode() and REDACTED in back["client_request"] and REDACTED in back["error"]["message"]


def test_s3_sink_body_is_the_same_encoding() -> None:
    sent = {}

    class Client:
        def put_object(self, **kwargs):
            sent.update(kwargs)

    record = _exchange().record([SECRET])
    S3Sink("bucket", client=Client()).write(record)
    assert decode(sent["Body"]) == record


def test_redact_with_secrets_on_text_holding_a_surrogate() -> None:
    document = {"a": f"{LONE} key {SECRET} {LONE}", "b": [f"x{SECRET}", LONE], LONE: "key"}
    redacted = redact(document, [SECRET])
    assert redacted == {"a": f"{LONE} key {REDACTED} {LONE}", "b": [f"x{REDACTED}", LONE], LONE: "key"}
    assert redact(document, []) == document


def test_ordinary_text_stays_readable_utf8() -> None:
    record = {"text": "caf\u00e9 \u65e5\u672c \U0001f600"}
    line = gzip.decompress(encode(record))
    assert line == '{"text":"caf\u00e9 \u65e5\u672c \U0001f600"}\n'.encode()
    assert decode(encode(record)) == record


def test_jsonutil_escapes_lone_surrogates() -> None:
    value = {"s": f"a{LONE}b", LONE: [LONE]}
    data = dumpb(value)
    data.decode("utf-8")
    assert loads(data) == json.loads(data) == value
    assert loads(dumps(value)) == value
