"""A minimal, fast fake upstream for the benchmark: raw asyncio HTTP/1.1.

Answers, with fixed small bodies and no validation (tests/fakes/ holds the
strict fakes; this one only has to be cheap, so that what is measured is the
proxy in front of it):

  POST .../chat/completions                       OpenAI, whole or streamed
  POST .../models/{model}:generateContent          Gemini, whole
  POST .../models/{model}:streamGenerateContent    Gemini, streamed (SSE)
  GET  /health

A stream is EVENTS content events (50 by default), each written to the
socket on its own, then the protocol's end. A model name containing "slow"
spaces the events SLOW_GAP seconds apart (the memory test uses it so that
many streams are open at once). Keep-alive, pipelining, Content-Length and
chunked request bodies are supported.

Run: python fake_upstream.py PORT [EVENTS]  (prints "ready" when listening)
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

EVENTS = 50
SLOW_GAP = 0.01  # seconds between the events of a "slow" model's stream
TEXT = "Hello from the fake upstream."
GEMINI_PATH = re.compile(rb"/models/([^/:?]+):(generateContent|streamGenerateContent)")


def _openai_whole(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        },
        separators=(",", ":"),
    ).encode()


def _openai_events(model: str, events: int, usage: bool) -> list[bytes]:
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        data = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": f"w{i} "}) for i in range(events)]
    out.append(chunk({}, "stop"))
    if usage:
        data = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": events, "total_tokens": 12 + events},
        }
        out.append(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


def _gemini_response(model: str, text: str, finish: bool, events: int = 7) -> dict:
    candidate: dict = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    usage: dict = {"promptTokenCount": 12, "totalTokenCount": 12}
    if finish:
        candidate["finishReason"] = "STOP"
        usage = {"promptTokenCount": 12, "candidatesTokenCount": events, "totalTokenCount": 12 + events}
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": "bench"}


def _gemini_whole(model: str) -> bytes:
    return json.dumps(_gemini_response(model, TEXT, True), separators=(",", ":")).encode()


def _gemini_events(model: str, events: int) -> list[bytes]:
    return [
        b"data: "
        + json.dumps(_gemini_response(model, f"w{i} ", i == events - 1, events), separators=(",", ":")).encode()
        + b"\r\n\r\n"
        for i in range(events)
    ]


class Answers:
    """Bodies are built once per (model, kind) and reused."""

    def __init__(self, events: int) -> None:
        self.events = events
        self._cache: dict[tuple, object] = {}

    def get(self, key: tuple, build):
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = build()
        return found


def _head(status: str, content_type: str, length: int | None) -> bytes:
    framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{framing}\r\n\r\n".encode()


class FakeProtocol(asyncio.Protocol):
    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a slow stream is being written: later requests wait

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._drain_requests()

    def _drain_requests(self) -> None:
        while not self.busy:
            request = self._take_request()
            if request is None:
                return
            self._answer(*request)

    def _take_request(self) -> tuple[bytes, bytes, bytes] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end])
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        length = 0
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        start = end + 4
        if chunked:
            body = bytearray()
            pos = start
            while True:
                line_end = self.buffer.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                size = int(bytes(self.buffer[pos:line_end]).split(b";")[0], 16)
                if size == 0:
                    trailer_end = self.buffer.find(b"\r\n\r\n", line_end)
                    if trailer_end < 0:
                        return None
                    consumed = trailer_end + 4
                    break
                if len(self.buffer) < line_end + 2 + size + 2:
                    return None
                body += self.buffer[line_end + 2 : line_end + 2 + size]
                pos = line_end + 2 + size + 2
            del self.buffer[:consumed]
            return method, target, bytes(body)
        if len(self.buffer) < start + length:
            return None
        body = bytes(self.buffer[start : start + length])
        del self.buffer[: start + length]
        return method, target, body

    def _answer(self, method: bytes, target: bytes, body: bytes) -> None:
        transport = self.transport
        assert transport is not None
        path = target.split(b"?", 1)[0]
        if method == b"GET":
            payload = b'{"status":"ok"}'
            transport.write(_head("200 OK", "application/json", len(payload)) + payload)
            return
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        found = GEMINI_PATH.search(path)
        answers = self.answers
        if path.endswith(b"/chat/completions"):
            model = str(data.get("model", "gpt-bench"))
            if data.get("stream"):
                usage = bool((data.get("stream_options") or {}).get("include_usage"))
                events = answers.get(
                    ("openai-stream", model, usage), lambda: _openai_events(model, answers.events, usage)
                )
                self._stream(events, "text/event-stream", "slow" in model)
            else:
                payload = answers.get(("openai", model), lambda: _openai_whole(model))
                transport.write(_head("200 OK", "application/json", len(payload)) + payload)
            return
        if found is not None:
            model = found.group(1).decode()
            if found.group(2) == b"streamGenerateContent":
                events = answers.get(("gemini-stream", model), lambda: _gemini_events(model, answers.events))
                self._stream(events, "text/event-stream", "slow" in model)
            else:
                payload = answers.get(("gemini", model), lambda: _gemini_whole(model))
                transport.write(_head("200 OK", "application/json", len(payload)) + payload)
            return
        print(f"fake upstream: no route for {method.decode()} {target.decode()}", file=sys.stderr, flush=True)
        payload = b'{"error":{"message":"no such route in the benchmark fake","code":404}}'
        transport.write(_head("404 Not Found", "application/json", len(payload)) + payload)

    def _stream(self, events: list[bytes], content_type: str, slow: bool) -> None:
        transport = self.transport
        assert transport is not None
        framed = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        if not slow:
            transport.write(_head("200 OK", content_type, None))
            for piece in framed:
                transport.write(piece)  # one send per event, as a model's tokens arrive
            transport.write(b"0\r\n\r\n")
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self._slow_stream(framed, content_type))

    async def _slow_stream(self, framed: list[bytes], content_type: str) -> None:
        transport = self.transport
        assert transport is not None
        try:
            transport.write(_head("200 OK", content_type, None))
            for piece in framed:
                await asyncio.sleep(SLOW_GAP)
                if transport.is_closing():
                    return
                transport.write(piece)
            transport.write(b"0\r\n\r\n")
        finally:
            self.busy = False
        if not transport.is_closing():
            self._drain_requests()


async def serve(port: int, events: int) -> None:
    answers = Answers(events)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeProtocol(answers), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    port = int(sys.argv[1])
    events = int(sys.argv[2]) if len(sys.argv) > 2 else EVENTS
    try:
        asyncio.run(serve(port, events))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
