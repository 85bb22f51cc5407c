"""Upstream faults, from a raw-socket fake that misbehaves on purpose, for
every client protocol, whole and streamed, same protocol and converted: the
client always gets its own protocol's error (a status before the first
byte, an error event after it), within the deadline, and never a key."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import zlib
from dataclasses import dataclass

import httpx
import pytest
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.stores.secrets import NoSecrets
from ccproxy.stores.state import MemoryStateStore

from tests.support.server import BackgroundServer

from .drivers import ACCESS_KEY

PROTOCOLS = ("openai", "claude", "gemini", "ollama", "responses")
SECRET = "sk-raw-upstream-secret-0123456789"
DEADLINE = 1.0
# The other upstream(s) each client is also tried against: the Responses API
# both ways, to the chat completions it is most often put in front of and
# from the client most often put in front of it.
CONVERTED = {"openai": ("gemini",), "claude": ("openai", "responses"), "gemini": ("ollama",), "ollama": ("claude",),
             "responses": ("openai",)}
STREAM_TYPES = {"openai": "text/event-stream", "claude": "text/event-stream", "gemini": "text/event-stream",
                "ollama": "application/x-ndjson", "responses": "text/event-stream"}

# The opening record of a good stream in each protocol, sent before a fault.
FIRST_RECORD = {
    "openai": b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
              b'"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\n\n',
    "claude": b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
              b'"role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":'
              b'{"input_tokens":1,"output_tokens":1}}}\n\nevent: content_block_start\ndata: {"type":'
              b'"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\nevent: '
              b'content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
              b'"text":"Hel"}}\n\n',
    "gemini": b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],'
              b'"modelVersion":"m"}\r\n\r\n',
    "ollama": b'{"model":"m","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"Hel"},'
              b'"done":false}\n',
    "responses": b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":'
                 b'"resp_1","object":"response","created_at":1,"status":"in_progress","model":"m","output":[]}}\n\n'
                 b'event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":1,'
                 b'"output_index":0,"item":{"type":"message","id":"msg_1","status":"in_progress","role":"assistant",'
                 b'"content":[]}}\n\nevent: response.content_part.added\ndata: {"type":"response.content_part.added",'
                 b'"sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":'
                 b'"output_text","text":"","annotations":[]}}\n\nevent: response.output_text.delta\ndata: {"type":'
                 b'"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,'
                 b'"content_index":0,"delta":"Hel","logprobs":[]}}\n\n',
}
# A good whole answer in each protocol (for the close-delimited body).
WHOLE = {
    "openai": {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
    "claude": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [
        {"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1}},
    "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}, "finishReason": "STOP",
                               "index": 0}], "modelVersion": "m"},
    "ollama": {"model": "m", "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": "Hello"},
               "done": True, "done_reason": "stop"},
    "responses": {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "m", "output": [
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [
            {"type": "output_text", "text": "Hello", "annotations": []}]}],
        "usage": {"input_tokens": 1, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 1,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 2}},
}
ERROR_STATUSES = {"429": 429, "500": 500, "503": 503, "529": 529}


def _bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    return b"".join(compressor.compress(block) for _ in range(128)) + compressor.flush()


BOMB = _bomb()


@dataclass
class Request:
    path: str
    body: dict


class RawUpstream:
    """A server that reads one HTTP request per connection and misbehaves as
    the model name (or, for Gemini, the path) says."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RawUpstream":
        ready = threading.Event()
        self._ready = ready
        self.thread.start()
        ready.wait(5)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            await self._misbehave(Request(path, body), writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _misbehave(self, request: Request, writer: asyncio.StreamWriter) -> None:
        model = request.body.get("model") or request.path.rsplit("/models/", 1)[-1].split(":", 1)[0]
        fault, protocol = model.rsplit("-", 1)
        streamed = request.body.get("stream") is True or "streamGenerate" in request.path
        if protocol == "ollama" and "stream" not in request.body:
            streamed = True  # Ollama streams unless told not to

        def send(status: int, headers: dict[str, str], body: bytes = b"", length: bool = True) -> None:
            reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
                      529: "Overloaded"}.get(status, "X")
            lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
            if length:
                lines.append(f"content-length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

        def reset() -> None:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()

        stream_type = {"content-type": STREAM_TYPES[protocol]}
        if fault == "resetbefore":
            reset()
        elif fault == "resetafter":
            send(200, {**stream_type, "transfer-encoding": "chunked"} if streamed else {"content-type": "application/json",
                 "content-length": "500"}, length=False)
            await writer.drain()
            reset()
        elif fault == "resetmid":
            send(200, stream_type, length=False)
            writer.write(FIRST_RECORD[protocol])
            await writer.drain()
            await asyncio.sleep(0.05)
            reset()
        elif fault == "hangbefore":
            await asyncio.sleep(DEADLINE * 4)
        elif fault == "hangmid":
            send(200, stream_type, length=False)
            writer.write(FIRST_RECORD[protocol])
            await writer.drain()
            await asyncio.sleep(DEADLINE * 4)
        elif fault == "badrecord":
            record = b"data: {bad json " + SECRET.encode() + b"\n\n" if protocol != "ollama" else b"{bad json " + SECRET.encode() + b"\n"
            send(200, stream_type if streamed else {"content-type": "application/json"},
                 FIRST_RECORD[protocol] + record if streamed else b"{bad json " + SECRET.encode())
        elif fault == "html":
            send(200, {"content-type": "text/html"}, b"<html><body>Gateway says hi</body></html>")
        elif fault == "bomb":
            send(200, {"content-type": STREAM_TYPES[protocol] if streamed else "application/json",
                       "content-encoding": "gzip"}, BOMB)
        elif fault == "closedelimited":
            if streamed:
                return await self._misbehave(Request(request.path, {**request.body, "model": f"resetmid-{protocol}"}), writer)
            send(200, {"content-type": "application/json", "connection": "close"}, json.dumps(WHOLE[protocol]).encode(),
                 length=False)
        elif fault == "wrongshape":
            body = b"[1, 2, 3]" if not streamed else (
                b"data: [1, 2]\n\n" if protocol != "ollama" else b"[1, 2]\n")
            send(200, stream_type if streamed else {"content-type": "application/json"}, body)
        elif fault in ERROR_STATUSES:
            error = {"error": {"message": f"upstream trouble for key {SECRET}", "type": "server_error", "code": 500}}
            if protocol == "ollama":
                error = {"error": f"upstream trouble for key {SECRET}"}
            send(ERROR_STATUSES[fault], {"content-type": "application/json", "retry-after": "1"}, json.dumps(error).encode())
        await writer.drain()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


FAULTS = ("resetbefore", "resetafter", "resetmid", "hangbefore", "hangmid", "badrecord", "html", "bomb",
          "closedelimited", "wrongshape", *ERROR_STATUSES)


@pytest.fixture(scope="module")
def faulty():
    upstream = RawUpstream().start()
    base = {"openai": "/v1", "claude": "/v1", "gemini": "/v1beta", "ollama": "", "responses": "/v1"}
    providers = {f"raw-{p}": {"protocol": p, "base_url": upstream.url + base[p], "keys": [SECRET], "timeout": DEADLINE * 2}
                 for p in PROTOCOLS}
    models = {f"{fault}-{p}": [f"raw-{p}/{fault}-{p}"] for fault in FAULTS for p in PROTOCOLS}
    config = parse({"providers": providers, "groups": {"default": {"models": models}}, "access_keys": [ACCESS_KEY],
                    "retries": 0, "deadline": DEADLINE}, "faults")
    app = create_app(Settings(config=config, secrets=NoSecrets()))
    proxy = BackgroundServer(app).start()
    yield proxy.url, app
    proxy.stop()
    upstream.stop()


def ask(url: str, client: str, model: str, stream: bool) -> httpx.Response:
    messages = [{"role": "user", "content": "hi"}]
    if client == "openai":
        return httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": messages, "stream": stream},
                          headers={"authorization": f"Bearer {ACCESS_KEY}"}, timeout=10)
    if client == "claude":
        return httpx.post(f"{url}/v1/messages", json={"model": model, "max_tokens": 64, "messages": messages,
                                                     "stream": stream},
                          headers={"x-api-key": ACCESS_KEY, "anthropic-version": "2023-06-01"}, timeout=10)
    if client == "responses":
        return httpx.post(f"{url}/v1/responses", json={"model": model, "input": "hi", "stream": stream},
                          headers={"authorization": f"Bearer {ACCESS_KEY}"}, timeout=10)
    if client == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return httpx.post(f"{url}/v1beta/models/{model}:{method}", json={"contents": [{"role": "user", "parts": [
            {"text": "hi"}]}]}, headers={"x-goog-api-key": ACCESS_KEY}, timeout=10)
    return httpx.post(f"{url}/api/chat", json={"model": model, "messages": messages, "stream": stream},
                      headers={"authorization": f"Bearer {ACCESS_KEY}"}, timeout=10)


def error_in_shape(client: str, body: dict) -> bool:
    if client == "claude":
        return body.get("type") == "error" and isinstance(body["error"]["message"], str)
    if client == "ollama":
        return isinstance(body.get("error"), str)
    if client == "gemini":
        return isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str)
    return isinstance(body["error"]["message"], str)


def ends_with_error_event(client: str, content: bytes) -> bool:
    text = content.decode()
    if client == "claude":
        return "event: error\ndata: " in text
    if client == "ollama":
        last = [line for line in text.splitlines() if line.strip()][-1]
        return "error" in json.loads(last)
    if client == "responses":
        # Every lifecycle event carries "error": null; only these two end a stream with one.
        last = [r for r in text.replace("\r\n", "\n").split("\n\n") if r.strip()][-1]
        return last.startswith(("event: error\n", "event: response.failed\n"))
    records = [r for r in text.replace("\r\n", "\n").split("\n\n") if r.startswith("data: ")]
    return any('"error"' in r for r in records[-2:])


CASES = [
    pytest.param(fault, client, upstream, stream, id=f"{fault}-{client}-on-{upstream}-{'stream' if stream else 'whole'}")
    for fault in FAULTS
    for client in PROTOCOLS
    for upstream in (client, *CONVERTED[client])
    for stream in (False, True)
]


@pytest.mark.parametrize("fault,client,upstream,stream", CASES)
def test_every_fault_reaches_the_client_in_its_protocol(fault, client, upstream, stream, faulty):
    url, app = faulty
    app.state.proxy.rotation.state = MemoryStateStore()
    app.state.proxy.rotation._views.clear()
    started = time.monotonic()
    response = ask(url, client, f"{fault}-{upstream}", stream)
    took = time.monotonic() - started
    assert took < DEADLINE + 1.5, f"took {took:.1f} s"
    assert SECRET not in response.text
    if fault == "closedelimited" and not stream:
        assert response.status_code == 200, response.text  # a body that ends with the connection is a body
        return
    if response.status_code >= 400:
        assert response.status_code < 600 and (response.status_code >= 500 or fault in ("429",)), response.text
        assert error_in_shape(client, response.json()), response.text
        return
    assert stream, f"a whole answer came back 200 for fault {fault}: {response.text[:300]}"
    assert ends_with_error_event(client, response.content), response.text[-500:]

