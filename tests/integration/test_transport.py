"""FastTransport against a scripted raw HTTP/1.1 server on loopback: framing,
keep-alive and its races, timeouts, broken answers, TLS and flow control."""

from __future__ import annotations

import asyncio
import time
import ssl
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import httpx
import pytest
import trustme

from ccproxy.transport import FastTransport
from ccproxy.upstream import UpstreamClient, timeout


@dataclass
class Received:
    connection: int  # which connection it came on, from 0
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Received, asyncio.StreamWriter], Awaitable[bool]]  # returns False to close the connection


@dataclass
class RawServer:
    handler: Handler
    tls: ssl.SSLContext | None = None
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    async def __aenter__(self) -> "RawServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, self.connections = self.connections, self.connections + 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
                if headers.get("transfer-encoding") == "chunked":
                    body = b""
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        body += (await reader.readexactly(size + 2))[:-2]
                        if size == 0:
                            break
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(number, method, target, headers, body)
                self.received.append(request)
                if not await self.handler(request, writer):
                    return
        finally:
            writer.close()


def answer(body: bytes = b'{"ok":true}', status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status.encode(), len(body), extra, body)


def chunked(*pieces: bytes) -> bytes:
    out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    for piece in pieces:
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


async def ok(request: Received, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(b'{"echo":"%s"}' % request.body))
    return True


async def post(transport: FastTransport, url: str, body: bytes = b"hi", read: float = 5.0) -> httpx.Response:
    request = httpx.Request("POST", url, content=body, extensions={"timeout": {"connect": 5.0, "read": read, "write": 5.0}})
    return await transport.handle_async_request(request)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def twice(handler: Handler) -> tuple[bytes, bytes, int]:
    """Two requests in turn on one transport: both answers, and how many
    connections the server saw."""

    async def scenario():
        async with RawServer(handler) as server:
            transport = FastTransport()
            first = await (await post(transport, server.url())).aread()
            second = await (await post(transport, server.url())).aread()
            return first, second, server.connections

    return run(scenario())


def test_content_length_answers_reuse_one_connection():
    async def scenario():
        async with RawServer(ok) as server:
            transport = FastTransport()
            for i in range(3):
                response = await post(transport, server.url(), b"n%d" % i)
                assert response.status_code == 200
                assert await response.aread() == b'{"echo":"n%d"}' % i
            await transport.aclose()
            return server

    server = run(scenario())
    assert server.connections == 1
    assert [r.connection for r in server.received] == [0, 0, 0]
    first = server.received[0]
    assert (first.method, first.target, first.body) == ("POST", "/v1/chat/completions", b"n0")
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["content-length"] == "2"


def test_chunked_stream_arrives_whole_and_in_order():
    pieces = [b"data: %d\n\n" % i for i in range(40)]

    async def handler(request, writer):
        writer.write(chunked(*pieces))
        return True

    async def scenario():
        async with RawServer(handler) as server:
            transport = FastTransport()
            response = await post(transport, server.url())
            assert response.headers["content-type"] == "text/event-stream"
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            again = await post(transport, server.url())
            await again.aread()
            await transport.aclose()
            return body, server.connections

    body, connections = run(scenario())
    assert body == b"".join(pieces)
    assert connections == 1


def test_body_without_framing_ends_with_the_connection_and_is_not_reused():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        return False

    assert twice(handler) == (b"until the end", b"until the end", 2)


def test_connection_close_answer_is_not_reused():
    async def handler(request, writer):
        writer.write(answer(extra=b"connection: close\r\n"))
        return False

    assert twice(handler) == (b'{"ok":true}', b'{"ok":true}', 2)


def test_idle_connection_closed_by_the_upstream_is_replaced():
    async def handler(request, writer):
        writer.write(answer())
        await writer.drain()
        return False  # closes right after answering, although the answer allowed keep-alive

    async def scenario():
        async with RawServer(handler) as server:
            transport = FastTransport()
            await (await post(transport, server.url())).aread()
            await asyncio.sleep(0.05)  # the close reaches the idle connection
            response = await post(transport, server.url())
            return response.status_code, await response.aread(), server.connections

    assert run(scenario()) == (200, b'{"ok":true}', 2)


def test_reused_connection_that_closes_without_answering_is_retried_once():
    async def handler(request, writer):
        if request.connection == 0 and request.body == b"two":
            return False  # the keep-alive race: the request arrived as the upstream gave up on the connection
        writer.write(answer(request.body))
        return True

    async def scenario():
        async with RawServer(handler) as server:
            transport = FastTransport()
            await (await post(transport, server.url(), b"one")).aread()
            response = await post(transport, server.url(), b"two")
            return await response.aread(), [(r.connection, r.body) for r in server.received]

    body, seen = run(scenario())
    assert body == b"two"
    assert seen == [(0, b"one"), (0, b"two"), (1, b"two")]


def test_fresh_connection_that_closes_without_answering_fails():
    async def handler(request, writer):
        return False

    async def scenario():
        async with RawServer(handler) as server:
            with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
                await post(FastTransport(), server.url())
            return server.connections

    assert run(scenario()) == 1  # not retried: a new connection was not stale


def test_connection_lost_mid_body_raises_for_the_reader():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        return False

    async def scenario():
        async with RawServer(handler) as server:
            response = await post(FastTransport(), server.url())
            got = []
            with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
                async for chunk in response.aiter_raw():
                    got.append(chunk)
            return got

    assert run(scenario()) == [b"hello"]


def test_read_timeouts_before_the_head_and_between_chunks():
    async def silent(request, writer):
        await asyncio.sleep(2)
        return False

    async def stalls(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n")
        await asyncio.sleep(2)
        return False

    async def scenario():
        async with RawServer(silent) as server:
            with pytest.raises(httpx.ReadTimeout):
                await post(FastTransport(), server.url(), read=0.2)
        async with RawServer(stalls) as server:
            response = await post(FastTransport(), server.url(), read=0.2)
            with pytest.raises(httpx.ReadTimeout):
                async for chunk in response.aiter_raw():
                    assert chunk == b"ok"

    run(scenario())


def test_nobody_listening_is_a_connect_error():
    async def scenario():
        async with RawServer(ok) as server:
            url = server.url()
        with pytest.raises(httpx.ConnectError):
            await post(FastTransport(), url)

    run(scenario())


def test_malformed_answer_is_a_protocol_error():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 two hundred\r\n\r\n")
        return True

    async def scenario():
        async with RawServer(handler) as server:
            with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
                await post(FastTransport(), server.url())

    run(scenario())


def test_interim_100_continue_is_skipped():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final"))
        return True

    async def scenario():
        async with RawServer(handler) as server:
            response = await post(FastTransport(), server.url())
            return response.status_code, await response.aread()

    assert run(scenario()) == (200, b"final")


def test_error_status_and_headers_come_through():
    async def handler(request, writer):
        writer.write(answer(b'{"error":"slow down"}', "429 Too Many Requests", b"retry-after: 7\r\n"))
        return True

    async def scenario():
        async with RawServer(handler) as server:
            response = await post(FastTransport(), server.url())
            return response.status_code, response.reason_phrase, response.headers["retry-after"], await response.aread()

    assert run(scenario()) == (429, "Too Many Requests", "7", b'{"error":"slow down"}')


def test_large_bodies_both_ways_with_flow_control():
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB, above the reader's high-water mark

    async def handler(request, writer):
        writer.write(answer(request.body))
        await writer.drain()
        return True

    async def scenario():
        async with RawServer(handler) as server:
            transport = FastTransport()
            response = await post(transport, server.url(), big)
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                await asyncio.sleep(0)  # a slow reader
            return bytes(received), server.received[0].body == big

    received, server_got_it = run(scenario())
    assert server_got_it
    assert received == big


def test_streamed_request_body_goes_out_chunked():
    async def pieces():
        for piece in (b"a", b"bc", b"def"):
            yield piece

    async def scenario():
        async with RawServer(ok) as server:
            request = httpx.Request("POST", server.url(), content=pieces())
            response = await FastTransport().handle_async_request(request)
            return await response.aread(), server.received[0].headers["transfer-encoding"]

    assert run(scenario()) == (b'{"echo":"abcdef"}', "chunked")


def test_closing_an_unread_answer_drops_its_connection():
    async def handler(request, writer):
        writer.write(chunked(b"x" * 100))
        return True

    async def scenario():
        async with RawServer(handler) as server:
            transport = FastTransport()
            response = await post(transport, server.url())
            await response.aclose()
            await (await post(transport, server.url())).aread()
            return server.connections

    assert run(scenario()) == 2


def test_cancelled_request_closes_its_connection():
    async def handler(request, writer):
        if request.connection == 0:
            await asyncio.sleep(5)
            return False
        writer.write(answer())
        return True

    async def scenario():
        async with RawServer(handler) as server:
            transport = FastTransport()
            task = asyncio.create_task(post(transport, server.url()))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            response = await post(transport, server.url())
            return response.status_code, server.connections

    assert run(scenario()) == (200, 2)


def test_https_with_a_trusted_certificate():
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_tls)

    def client_tls() -> ssl.SSLContext:
        context = ssl.create_default_context()
        authority.configure_trust(context)
        return context

    async def scenario():
        async with RawServer(ok, tls=server_tls) as server:
            trusted = FastTransport(ssl_context=client_tls)
            response = await post(trusted, server.url(), b"secure")
            body = await response.aread()
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await post(FastTransport(), server.url())  # the system's trust does not know this authority
            return body

    assert run(scenario()) == b'{"echo":"secure"}'


def test_upstream_client_sends_a_user_agent_and_sets_the_request():
    async def scenario():
        async with RawServer(ok) as server:
            client = UpstreamClient()
            response = await client.send("POST", server.url(), timeout(5), b"x", {"content-type": "application/json"})
            await response.aread()
            await client.aclose()
            return response.request.url, server.received[0].headers

    url, headers = run(scenario())
    assert str(url).endswith("/v1/chat/completions")
    assert headers["user-agent"].startswith("ccproxy/")
    assert headers["content-type"] == "application/json"


def test_upstream_client_honours_a_proxy_from_the_environment(monkeypatch):
    async def scenario(proxy_port):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = UpstreamClient()
        response = await client.send("POST", "http://upstream.invalid/v1/x", timeout(5), b"via proxy")
        body = await response.aread()
        await client.aclose()
        return body

    async def outer():
        async with RawServer(ok) as proxy:
            body = await scenario(proxy.port)
            return body, proxy.received[0]

    body, seen = run(outer())
    assert body == b'{"echo":"via proxy"}'
    assert seen.target == "http://upstream.invalid/v1/x"  # a proxy gets the absolute URL


def test_proxy_reads_a_compressed_stream_although_it_asked_for_identity():
    import gzip

    from ccproxy.proxy import _iterate

    events = b"data: {\"a\":1}\n\ndata: [DONE]\n\n"

    async def handler(request, writer):
        body = gzip.compress(events)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        return True

    async def scenario():
        async with RawServer(handler) as server:
            client = UpstreamClient()
            response = await client.send("POST", server.url(), timeout(5), b"{}", {"accept-encoding": "identity"})
            got = b"".join([chunk async for chunk in _iterate(response, time.monotonic() + 5)])
            await client.aclose()
            return got

    assert run(scenario()) == events


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_compression_bomb_is_refused_while_it_is_read(streamed):
    """260 KB of gzip that would be 256 MiB: the reader stops at its cap
    instead of allocating it."""
    import zlib

    from ccproxy.errors import ProxyError
    from ccproxy.proxy import _iterate, _read

    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(block) for _ in range(256)) + compressor.flush()
    assert len(bomb) < 300_000

    async def handler(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(bomb), bomb))
        return True

    async def scenario():
        async with RawServer(handler) as server:
            client = UpstreamClient()
            response = await client.send("POST", server.url(), timeout(5), b"{}", {"accept-encoding": "identity"})
            try:
                if streamed:
                    total = 0
                    async for chunk in _iterate(response, time.monotonic() + 5):
                        total += len(chunk)
                    return total
                return len(await _read(response, time.monotonic() + 5, cap=8 * 1024 * 1024))
            finally:
                await client.aclose()

    with pytest.raises(ProxyError) as caught:
        run(scenario())
    assert caught.value.status == 502 and "larger than" in caught.value.message


def test_an_answer_sent_before_the_whole_body_was_read_is_returned():
    big = b"x" * (16 << 20)  # more than the socket buffers take: the write has to wait

    async def refuse_early(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b'{"error":"too large"}', "413 Content Too Large", b"connection: close\r\n"))
        await writer.drain()
        writer.close()

    async def scenario():
        server = await asyncio.start_server(refuse_early, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            response = await post(FastTransport(), f"http://127.0.0.1:{port}/v1/x", big)
            return response.status_code, await response.aread()
        finally:
            server.close()

    assert run(scenario()) == (413, b'{"error":"too large"}')


def test_bytes_after_a_complete_answer_are_not_taken_for_it_and_end_the_connection():
    async def handler(request, writer):
        writer.write(answer(b"ok") + answer(b"nobody asked for this"))
        return True

    assert twice(handler) == (b"ok", b"ok", 2)
