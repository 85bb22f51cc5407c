import pytest
from ccproxy.app import split_prefix
from ccproxy.config import parse
from ccproxy.keys import KeyRing, fingerprint
from ccproxy.stores.secrets import FileSecretStore, NoSecrets


def test_prefixes():
    p = split_prefix("/v1/chat/completions", "act")
    assert (p.group, p.compat, p.path) == ("default", False, "/v1/chat/completions")
    p = split_prefix("/free/v1/messages", "act")
    assert (p.group, p.compat, p.path) == ("free", False, "/v1/messages")
    p = split_prefix("/compat/api/chat", "act")
    assert (p.group, p.compat, p.path) == ("default", True, "/api/chat")
    p = split_prefix("/compat_mode/v1beta/models/x:generateContent", "act")
    assert (p.group, p.compat, p.path) == ("default", True, "/v1beta/models/x:generateContent")
    p = split_prefix("/free/compat_mode/v1/models", "act")
    assert (p.group, p.compat, p.path) == ("free", True, "/v1/models")
    p = split_prefix("/switch/v1/models", "act")
    assert (p.group, p.compat, p.path) == ("act", False, "/v1/models")
    p = split_prefix("/switch/compat/v1/models", "act")
    assert (p.group, p.compat, p.path) == ("act", True, "/v1/models")


CONFIG = {
    "providers": {
        "a": {"protocol": "openai", "base_url": "http://x/v1", "keys": ["literal-1", "env:CCP_T_MISSING"]},
        "b": {"protocol": "openai", "base_url": "http://x/v1", "keys": ["env:CCP_T_MISSING"]},
        "c": {"protocol": "ollama", "base_url": "http://x"},
    },
    "access_keys": ["env:CCP_T_ACCESS"],
}


def test_provider_keys_merge_config_and_secrets(tmp_path, monkeypatch):
    import json

    import pytest
    from ccproxy.errors import ProxyError

    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"providers": {"a": ["from-secret"]}, "access_keys": ["ccp-1"]}))
    ring = KeyRing(parse(CONFIG, "c"), FileSecretStore(secrets_file))
    assert ring.provider_keys("a") == ["literal-1", "from-secret"]
    assert ring.provider_keys("c") == [None]
    with pytest.raises(ProxyError) as caught:
        ring.provider_keys("b")
    assert "CCP_T_MISSING" in caught.value.message
    monkeypatch.setenv("CCP_T_ACCESS", "ccp-env")
    assert ring.check_access("ccp-env", open_when_empty=False)
    assert ring.check_access("ccp-1", open_when_empty=False)
    assert not ring.check_access("ccp-2", open_when_empty=False)
    assert not ring.check_access(None, open_when_empty=True)


def test_no_access_keys_is_open_only_when_allowed():
    ring = KeyRing(parse({"providers": {}}, "c"), NoSecrets())
    assert ring.check_access(None, open_when_empty=True)
    assert not ring.check_access("x", open_when_empty=False)


def test_fingerprint_hides_the_key():
    fp = fingerprint("sk-secret-value")
    assert "secret" not in fp and fp == fingerprint("sk-secret-value") and fp != fingerprint("sk-other")


def test_who_turns_compat_mode_on():
    from ccproxy.config import Provider
    from ccproxy.proxy import use_compat

    native = Provider(protocol="ollama", base_url="http://x")
    textual = Provider(protocol="ollama", base_url="http://x", tool_mode="compat")
    assert use_compat("auto", False, native) is False
    assert use_compat("auto", True, native) is True       # the /compat prefix
    assert use_compat("auto", False, textual) is True     # the provider's tool_mode
    assert use_compat("native", True, textual) is False   # a group's native wins
    assert use_compat("compat", False, native) is True    # a group's compat wins


def test_on_lambda_whole_answers_finish_their_bookkeeping_inside_the_response():
    import asyncio

    from ccproxy.app import _respond
    from ccproxy.proxy import Answer

    done = []

    async def bookkeeping():
        done.append("written")

    async def run():
        response = _respond(Answer(raw=b'{"ok":true}', after=[bookkeeping]), finish_inside=True)
        assert response.headers["content-length"] == "11"
        body = b""
        async for piece in response.body_iterator:
            body += piece
            assert done == [], "the body must go out before the bookkeeping runs"
        return body

    assert asyncio.run(run()) == b'{"ok":true}'
    assert done == ["written"]


@pytest.mark.parametrize("finish_inside", [True, False])
def test_a_streams_last_piece_ends_the_response_only_when_no_bookkeeping_must_finish_inside(finish_inside):
    import asyncio

    from ccproxy.app import _respond
    from ccproxy.pipeline import LastPiece
    from ccproxy.proxy import Answer

    done = []

    async def bookkeeping():
        await asyncio.sleep(0)
        done.append("written")

    async def stream():
        yield b"event one"
        yield LastPiece(b"the end")

    async def run():
        response = _respond(Answer(stream=stream(), after=[bookkeeping]), finish_inside=finish_inside)
        pieces = [piece async for piece in response.body_iterator]
        # Off Lambda the bookkeeping finishes after the body, in a task of its own.
        from ccproxy.app import _pending

        await asyncio.gather(*list(_pending))
        return pieces

    pieces = asyncio.run(run())
    assert pieces == [b"event one", b"the end"]
    assert (type(pieces[-1]) is LastPiece) is not finish_inside
    assert done == ["written"]


def test_captures_keep_their_cap_and_say_so():
    from ccproxy.exchange import Capture

    capture = Capture(limit=10)
    capture.add(b"12345")
    capture.add(b"67890abc")
    capture.add(b"more")
    assert capture.text() == "1234567890" and capture.truncated


def test_records_redact_every_known_key_wherever_it_is():
    from ccproxy.exchange import Exchange

    exchange = Exchange(route="POST /v1/messages", client_protocol="claude", group="default", limit=1000)
    exchange.client_request.add(b'{"messages":[{"role":"user","content":"my key sk-secret-123456 here"}]}')
    exchange.system = "use sk-secret-123456"
    record = exchange.record(["sk-secret-123456"])
    assert "sk-secret-123456" not in str(record) and record["system"] == "use [redacted]"
