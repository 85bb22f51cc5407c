"""The upstream transport (httpx's interface over aiohttp's pool) against a
scripted raw HTTP/1.1 server on loopback: framing, keep-alive and its races,
timeouts, broken answers, TLS and flow control."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme
from ccproxy.aiohttp_transport import AiohttpTransport, UpstreamOptions
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


async def post(transport: AiohttpTransport, url: str, body: bytes = b"hi", read: float = 5.0) -> httpx.Response:
    request = httpx.Request("POST", url, content=body, extensions={"timeout": {"connect": 5.0, "read": read, "write": 5.0}})
    return await transport.handle_async_request(request)


@contextlib.asynccontextmanager
async def pool(**options) -> AsyncIterator[AiohttpTransport]:
    """A transport that ignores the environment's proxies, closed after use."""
    transport = AiohttpTransport(trust_env=False, **options)
    try:
        yield transport
    finally:
        await transport.aclose()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def twice(handler: Handler) -> tuple[bytes, bytes, int]:
    """Two requests in turn on one transport: both answers, and how many
    connections the server saw."""

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            first = await (await post(transport, server.url())).aread()
            second = await (await post(transport, server.url())).aread()
            return first, second, server.connections

    return run(scenario())


def test_content_length_answers_reuse_one_connection():
    async def scenario():
        async with RawServer(ok) as server, pool() as transport:
            for i in range(3):
                response = await post(transport, server.url(), b"n%d" % i)
                assert response.status_code == 200
                assert await response.aread() == b'{"echo":"n%d"}' % i
            return server

    server = run(scenario())
    assert server.connections == 1
    assert [r.connection for r in server.received] == [0, 0, 0]
    first = server.received[0]
    assert (first.method, first.target, first.body) == ("POST", "/v1/chat/completions", b"n0")
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["content-length"] == "2"
    # Nothing the request did not ask for: no cookies, no default accept or encoding, no content-type.
    assert set(first.headers) == {"host", "content-length"}


def test_headers_go_out_as_given_and_the_host_header_is_honoured():
    async def scenario():
        async with RawServer(ok) as server, pool() as transport:
            request = httpx.Request(
                "GET", server.url("/a?b=c%20d"),
                headers={"Host": "files.example:8080", "X-Custom-Case": "v", "accept-encoding": "identity"},
                extensions={"timeout": {"connect": 5.0, "read": 5.0}},
            )
            await (await transport.handle_async_request(request)).aread()
            return server.received[0]

    seen = run(scenario())
    assert seen.target == "/a?b=c%20d"
    assert seen.headers["host"] == "files.example:8080"
    assert seen.headers["x-custom-case"] == "v"
    assert seen.headers["accept-encoding"] == "identity"


def test_chunked_stream_arrives_whole_and_in_order():
    pieces = [b"data: %d\n\n" % i for i in range(40)]

    async def handler(request, writer):
        writer.write(chunked(*pieces))
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url())
            assert response.headers["content-type"] == "text/event-stream"
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            again = await post(transport, server.url())
            await again.aread()
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
        async with RawServer(handler) as server, pool() as transport:
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
        async with RawServer(handler) as server, pool() as transport:
            await (await post(transport, server.url(), b"one")).aread()
            response = await post(transport, server.url(), b"two")
            return await response.aread(), [(r.connection, r.body) for r in server.received]

    body, seen = run(scenario())
    assert body == b"two"
    assert seen == [(0, b"one"), (0, b"two"), (1, b"two")]


def test_a_reused_connection_is_retried_once_only():
    async def handler(request, writer):
        if request.body == b"two":
            return False  # every connection closes on it
        writer.write(answer(request.body))
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            await (await post(transport, server.url(), b"one")).aread()
            with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
                await post(transport, server.url(), b"two")
            return [(r.connection, r.body) for r in server.received]

    assert run(scenario()) == [(0, b"one"), (0, b"two"), (1, b"two")]


def test_a_streamed_body_is_never_sent_twice():
    async def handler(request, writer):
        if request.connection == 0 and request.body != b"one":
            return False
        writer.write(answer(request.body))
        return True

    async def pieces():
        yield b"str"
        yield b"eamed"

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            await (await post(transport, server.url(), b"one")).aread()
            request = httpx.Request("POST", server.url(), content=pieces())
            with pytest.raises(httpx.RemoteProtocolError):
                await transport.handle_async_request(request)
            return [(r.connection, r.body) for r in server.received]

    assert run(scenario()) == [(0, b"one"), (0, b"streamed")]


def test_fresh_connection_that_closes_without_answering_fails():
    async def handler(request, writer):
        return False

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
                await post(transport, server.url())
            return server.connections

    assert run(scenario()) == 1  # not retried: a new connection was not stale


def test_connection_lost_mid_body_raises_for_the_reader():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        return False

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url())
            got = []
            with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
                async for chunk in response.aiter_raw():
                    got.append(chunk)
            return got

    assert run(scenario()) == [b"hello"]


def test_content_length_answer_cut_short_raises_for_the_reader():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await writer.drain()
        return False

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url())
            with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
                await response.aread()

    run(scenario())


def test_read_timeouts_before_the_head_and_between_chunks():
    async def silent(request, writer):
        await asyncio.sleep(2)
        return False

    async def stalls(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n")
        await asyncio.sleep(2)
        return False

    async def scenario():
        async with RawServer(silent) as server, pool() as transport:
            with pytest.raises(httpx.ReadTimeout):
                await post(transport, server.url(), read=0.2)
        async with RawServer(stalls) as server, pool() as transport:
            response = await post(transport, server.url(), read=0.2)
            with pytest.raises(httpx.ReadTimeout):
                async for chunk in response.aiter_raw():
                    assert chunk == b"ok"

    run(scenario())


def test_the_read_timeout_is_per_read_not_for_the_whole_answer():
    async def slow(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6):
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
        writer.write(b"0\r\n\r\n")
        return True

    async def scenario():
        async with RawServer(slow) as server, pool() as transport:
            response = await post(transport, server.url(), read=0.3)  # the whole answer takes 0.6 s
            return await response.aread()

    assert run(scenario()) == b"x" * 6


def test_a_connect_timeout_is_an_httpx_connect_timeout():
    import socket

    # A listener whose accept queue is full and never drained: Linux drops
    # further SYNs, so a connect to it hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)

    async def scenario():
        async with pool() as transport:
            request = httpx.Request("GET", f"http://127.0.0.1:{port}/",
                                    extensions={"timeout": {"connect": 0.3, "read": 5.0, "pool": 5.0}})
            with pytest.raises(httpx.ConnectTimeout):
                await transport.handle_async_request(request)

    try:
        run(scenario())
    finally:
        for sock in fillers + [listener]:
            sock.close()


def test_nobody_listening_is_a_connect_error():
    async def scenario():
        async with RawServer(ok) as server:
            url = server.url()
        async with pool() as transport:
            with pytest.raises(httpx.ConnectError):
                await post(transport, url)
        client = UpstreamClient()
        try:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.send("POST", url, timeout(5), b"x")
            assert str(caught.value.request.url) == url  # built for the error, as httpx's own would carry it
        finally:
            await client.aclose()

    run(scenario())


def test_malformed_answer_is_a_protocol_error():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 two hundred\r\n\r\n")
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
                await post(transport, server.url())

    run(scenario())


def test_interim_100_continue_is_skipped():
    async def handler(request, writer):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final"))
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url())
            return response.status_code, await response.aread()

    assert run(scenario()) == (200, b"final")


def test_a_101_answer_does_not_crash_and_its_connection_is_not_reused():
    async def handler(request, writer):
        if request.connection == 0:
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
            await writer.drain()
            return False
        writer.write(answer(b"after"))
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url())
            status = response.status_code
            await response.aread()
            again = await post(transport, server.url())
            return status, again.status_code, await again.aread(), server.connections

    assert run(scenario()) == (101, 200, b"after", 2)


def test_head_answers_do_not_hang():
    async def handler(request, writer):
        # A HEAD answer names the length the GET would have, and has no body.
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
        return True

    async def scenario():
        async with RawServer(handler) as server:
            client = UpstreamClient()
            try:
                first = await client.send("HEAD", server.url(), timeout(5))
                second = await client.send("HEAD", server.url(), timeout(5))
                return (first.status_code, first.headers["content-length"], await first.aread(), await second.aread(),
                        server.connections)
            finally:
                await client.aclose()

    assert run(scenario()) == (200, "1000", b"", b"", 1)


def test_204_and_304_answers_have_no_body():
    async def handler(request, writer):
        status = b"204 No Content" if request.connection == 0 and len(request.body) == 1 else b"304 Not Modified"
        writer.write(b"HTTP/1.1 %s\r\n\r\n" % status)
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            first = await post(transport, server.url(), b"1")
            second = await post(transport, server.url(), b"22")
            return first.status_code, await first.aread(), second.status_code, await second.aread(), server.connections

    assert run(scenario()) == (204, b"", 304, b"", 1)


def test_error_status_and_headers_come_through():
    async def handler(request, writer):
        writer.write(answer(b'{"error":"slow down"}', "429 Too Many Requests", b"retry-after: 7\r\nx-b: 1\r\nx-b: 2\r\n"))
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url())
            return (response.status_code, response.reason_phrase, response.headers["retry-after"],
                    response.headers.get_list("x-b"), await response.aread())

    assert run(scenario()) == (429, "Too Many Requests", "7", ["1", "2"], b'{"error":"slow down"}')


def test_large_bodies_both_ways_with_flow_control():
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB, above the reader's buffer

    async def handler(request, writer):
        writer.write(answer(request.body))
        await writer.drain()
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
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
        async with RawServer(ok) as server, pool() as transport:
            request = httpx.Request("POST", server.url(), content=pieces())
            response = await transport.handle_async_request(request)
            return await response.aread(), server.received[0].headers["transfer-encoding"]

    assert run(scenario()) == (b'{"echo":"abcdef"}', "chunked")


def test_closing_an_unread_answer_drops_its_connection():
    async def handler(request, writer):
        whole = chunked(b"x" * 100, b"y" * 100)
        writer.write(whole[:-20])
        await writer.drain()
        await asyncio.sleep(0.2)  # the answer is not complete when the reader gives up on it
        writer.write(whole[-20:])
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url())
            await response.aclose()
            again = await (await post(transport, server.url())).aread()
            return again, server.connections

    assert run(scenario()) == (b"x" * 100 + b"y" * 100, 2)


def test_closing_an_unread_answer_that_had_arrived_whole_keeps_its_connection():
    async def handler(request, writer):
        writer.write(chunked(request.body * 100))
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            response = await post(transport, server.url(), b"a")
            await asyncio.sleep(0.05)  # all of it arrives
            await response.aclose()
            again = await (await post(transport, server.url(), b"b")).aread()
            return again, server.connections

    assert run(scenario()) == (b"b" * 100, 1)


def test_cancelled_request_closes_its_connection():
    async def handler(request, writer):
        if request.connection == 0:
            await asyncio.sleep(5)
            return False
        writer.write(answer())
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            task = asyncio.create_task(post(transport, server.url()))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            response = await post(transport, server.url())
            await response.aread()
            return response.status_code, server.connections

    assert run(scenario()) == (200, 2)


def test_concurrent_requests_to_one_upstream_open_at_most_limit_per_host_connections():
    async def handler(request, writer):
        await asyncio.sleep(0.01)
        writer.write(answer(request.body))
        return True

    async def scenario():
        async with RawServer(handler) as server, pool(limit_per_host=64) as transport:
            async def one(i: int) -> bytes:
                request = httpx.Request("POST", server.url(), content=b"%d" % i,
                                        extensions={"timeout": {"connect": 5.0, "read": 10.0, "pool": 15.0}})
                return await (await transport.handle_async_request(request)).aread()

            bodies = await asyncio.gather(*(one(i) for i in range(500)))
            return bodies, server.connections

    bodies, connections = run(scenario())
    assert bodies == [b"%d" % i for i in range(500)]
    assert connections <= 64


def test_waiting_for_a_connection_is_bounded_by_the_pool_timeout():
    async def handler(request, writer):
        await asyncio.sleep(1)
        writer.write(answer())
        return True

    async def scenario():
        async with RawServer(handler) as server, pool(limit_per_host=1) as transport:
            first = asyncio.create_task(post(transport, server.url()))
            await asyncio.sleep(0.05)
            request = httpx.Request("POST", server.url(), content=b"x",
                                    extensions={"timeout": {"connect": 0.1, "read": 5.0, "pool": 0.1}})
            with pytest.raises(httpx.ConnectTimeout):
                await transport.handle_async_request(request)
            await (await first).aread()

    run(scenario())


# ---------------------------------------------------------------- TLS


@dataclass
class Authority:
    ca: trustme.CA
    server: ssl.SSLContext
    bundle: str  # the CA certificate's file, PEM


@pytest.fixture
def authority(tmp_path) -> Authority:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_tls)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return Authority(ca, server_tls, str(bundle))


def test_https_with_a_trusted_certificate(authority):
    async def scenario():
        async with RawServer(ok, tls=authority.server) as server:
            async with pool(verify=authority.bundle) as trusted:
                response = await post(trusted, server.url(), b"secure")
                body = await response.aread()
            async with pool() as default:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await post(default, server.url())  # the system's trust does not know this authority
            return body

    assert run(scenario()) == b'{"echo":"secure"}'


def test_verify_per_provider_false_or_a_ca_bundle(authority):
    from ccproxy.config import Provider

    async def scenario():
        async with RawServer(ok, tls=authority.server) as server:
            client = UpstreamClient()
            try:
                bodies = []
                for options in (
                    UpstreamOptions(verify=False),
                    UpstreamOptions(verify=authority.bundle),
                    Provider(protocol="openai", base_url=server.url(""), verify=authority.bundle),
                    Provider(protocol="openai", base_url=server.url(""), verify=False),
                ):
                    response = await client.send("POST", server.url(), timeout(5), b"p", provider=options)
                    bodies.append(await response.aread())
                for options in (None, Provider(protocol="openai", base_url=server.url(""))):
                    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                        await client.send("POST", server.url(), timeout(5), b"p", provider=options)
                return bodies
            finally:
                await client.aclose()

    assert run(scenario()) == [b'{"echo":"p"}'] * 4


def test_a_ca_bundle_that_cannot_be_read_is_a_connect_error(tmp_path):
    async def scenario():
        client = UpstreamClient()
        try:
            with pytest.raises(httpx.ConnectError, match="CA bundle"):
                await client.send("GET", "https://127.0.0.1:9/", timeout(5), provider=UpstreamOptions(verify=str(tmp_path / "none.pem")))
        finally:
            await client.aclose()

    run(scenario())


def test_config_checks_verify_and_proxy(tmp_path):
    from ccproxy.config import ConfigError, parse

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    base = {"protocol": "openai", "base_url": "https://api.example"}
    config = parse({"providers": {"p": {**base, "verify": str(bundle), "proxy": "http://127.0.0.1:3128"}}}, "c")
    assert (config.providers["p"].verify, config.providers["p"].proxy) == (str(bundle), "http://127.0.0.1:3128")
    assert parse({"providers": {"p": {**base, "verify": False}}}, "c").providers["p"].verify is False
    defaults = parse({"providers": {"p": base}}, "c").providers["p"]
    assert (defaults.verify, defaults.proxy) == (True, None)
    with pytest.raises(ConfigError, match="providers.p.verify: no CA bundle"):
        parse({"providers": {"p": {**base, "verify": str(tmp_path / "missing.pem")}}}, "c")
    with pytest.raises(ConfigError, match="providers.p.proxy"):
        parse({"providers": {"p": {**base, "proxy": "socks5://127.0.0.1:1080"}}}, "c")


def _uvloop_runner():
    uvloop = pytest.importorskip("uvloop")
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_tls_close_without_close_notify_after_a_complete_answer(authority, loop, framing):
    """The upstream drops the TCP connection right after a complete answer,
    without TLS's close_notify: the answer is whole, so it is returned."""
    body = b'{"answer":"' + b"y" * 5000 + b'"}'

    async def handler(request, writer):
        writer.write(answer(body) if framing == "content-length" else chunked(body[:100], body[100:]))
        await writer.drain()
        writer.transport.abort()  # no TLS shutdown, no close_notify
        return False

    async def scenario():
        async with RawServer(handler, tls=authority.server) as server:
            client = UpstreamClient()
            try:
                got = []
                for _ in range(2):
                    response = await client.send("POST", server.url(), timeout(5), b"x",
                                                 provider=UpstreamOptions(verify=authority.bundle))
                    got.append((response.status_code, await response.aread()))
                    await asyncio.sleep(0.1)
                return got
            finally:
                await client.aclose()

    runner = asyncio.Runner() if loop == "asyncio" else _uvloop_runner()
    with runner:
        assert runner.run(asyncio.wait_for(scenario(), 20)) == [(200, body), (200, body)]


# ---------------------------------------------------------------- UpstreamClient


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


def test_the_transport_serves_an_httpx_client_as_the_bench_uses_it():
    async def scenario():
        async with RawServer(ok) as server:
            async with httpx.AsyncClient(transport=AiohttpTransport(limit_per_host=1, keepalive_expiry=120)) as http:
                bodies = [(await http.post(server.url(), content=b"b%d" % i)).content for i in range(2)]
            return bodies, server.connections

    assert run(scenario()) == ([b'{"echo":"b0"}', b'{"echo":"b1"}'], 1)


def _no_proxy_environment(monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_upstream_client_honours_a_proxy_from_the_environment(monkeypatch):
    _no_proxy_environment(monkeypatch)

    async def scenario(proxy_port):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
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
    assert seen.headers["host"] == "upstream.invalid"


def test_no_proxy_sends_a_host_directly(monkeypatch):
    _no_proxy_environment(monkeypatch)

    async def scenario():
        async with RawServer(ok) as proxy, RawServer(ok) as upstream:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
            client = UpstreamClient()
            try:
                response = await client.send("POST", upstream.url(), timeout(5), b"direct")
                return await response.aread(), len(proxy.received), len(upstream.received)
            finally:
                await client.aclose()

    assert run(scenario()) == (b'{"echo":"direct"}', 0, 1)


def test_a_providers_proxy_overrides_the_environment(monkeypatch):
    from ccproxy.config import Provider

    _no_proxy_environment(monkeypatch)

    async def scenario():
        async with RawServer(ok) as environment_proxy, RawServer(ok) as provider_proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{environment_proxy.port}")
            client = UpstreamClient()
            try:
                provider = Provider(protocol="openai", base_url="http://upstream.invalid",
                                    proxy=f"http://user:secret@127.0.0.1:{provider_proxy.port}")
                response = await client.send("POST", "http://upstream.invalid/v1/x", timeout(5), b"p", provider=provider)
                return await response.aread(), len(environment_proxy.received), provider_proxy.received[0]
            finally:
                await client.aclose()

    body, environment_seen, seen = run(scenario())
    assert (body, environment_seen) == (b'{"echo":"p"}', 0)
    assert seen.target == "http://upstream.invalid/v1/x"
    assert seen.headers["proxy-authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret


def test_https_through_a_providers_proxy_tunnels_and_verifies(authority, monkeypatch):
    """CONNECT through the proxy, then TLS with the provider's CA bundle,
    end to end: the proxy sees only the tunnel."""
    _no_proxy_environment(monkeypatch)
    tunnels: list[str] = []

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        method, target, _ = head.split("\r\n")[0].split(" ")
        tunnels.append(f"{method} {target}")
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def scenario():
        async with RawServer(ok, tls=authority.server) as upstream:
            proxy = await asyncio.start_server(tunnel, "127.0.0.1", 0)
            proxy_url = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
            client = UpstreamClient()
            try:
                options = UpstreamOptions(verify=authority.bundle, proxy=proxy_url)
                response = await client.send("POST", upstream.url(), timeout(5), b"tunnelled", provider=options)
                body = await response.aread()
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.send("POST", upstream.url(), timeout(5), b"x", provider=UpstreamOptions(proxy=proxy_url))
                return body
            finally:
                await client.aclose()
                proxy.close()

    assert run(scenario()) == b'{"echo":"tunnelled"}'
    assert tunnels[0].startswith("CONNECT 127.0.0.1:")


def _unclosed_reports(scenario) -> list[str]:
    """Runs `scenario` and collects aiohttp's complaints about sessions or
    connectors never closed (ResourceWarnings and the loop's exception
    handler both)."""
    import gc
    import warnings

    reports: list[str] = []

    async def watched():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reports.append(context["message"]))
        await scenario()

    gc.collect()  # what earlier tests left behind is theirs, not this scenario's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(watched())
        gc.collect()
    reports += [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    # aiohttp's own complaints only: an unclosed loop or socket of another
    # test's making may be collected here too.
    return [r for r in reports if "Unclosed client session" in r or "Unclosed connector" in r]


def test_aclose_closes_the_session():
    async def scenario():
        async with RawServer(ok) as server:
            client = UpstreamClient()
            await (await client.send("POST", server.url(), timeout(5), b"x")).aread()
            session = client._pools[asyncio.get_running_loop()]._session
            assert not session.closed
            await client.aclose()
            assert session.closed and not client._pools

    assert _unclosed_reports(scenario) == []


def test_a_closed_loops_session_is_dropped_when_another_loop_sends():
    client = UpstreamClient()

    async def send():
        async with RawServer(ok) as server:
            await (await client.send("POST", server.url(), timeout(5), b"x")).aread()
            return asyncio.get_running_loop()

    async def then_close():
        await send()
        assert len(client._pools) == 1  # the first loop's, closed, is gone
        await client.aclose()

    first = run(send())
    assert first.is_closed() and list(client._pools) == [first]
    assert _unclosed_reports(then_close) == []


def test_proxy_reads_a_compressed_stream_although_it_asked_for_identity():
    import gzip

    from ccproxy.upstream import MAX_ANSWER_BYTES, UpstreamReply

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
            reply = UpstreamReply(response)
            got = b"".join([chunk async for chunk in reply.chunks(MAX_ANSWER_BYTES)])
            await client.aclose()
            return got, server.received[0].headers["accept-encoding"]

    assert run(scenario()) == (events, "identity")


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_compression_bomb_is_refused_while_it_is_read(streamed):
    """260 KB of gzip that would be 256 MiB: the reader stops at its cap
    instead of allocating it."""
    import zlib

    from ccproxy.errors import ProxyError
    from ccproxy.upstream import MAX_ANSWER_BYTES, UpstreamReply

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
                reply = UpstreamReply(response)
                if streamed:
                    total = 0
                    async for chunk in reply.chunks(MAX_ANSWER_BYTES):
                        total += len(chunk)
                    return total
                return len(await reply.read(cap=8 * 1024 * 1024))
            finally:
                await reply.aclose()  # as the proxy does however a stream ends
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
            async with pool() as transport:
                response = await post(transport, f"http://127.0.0.1:{port}/v1/x", big)
                return response.status_code, await response.aread()
        finally:
            server.close()

    assert run(scenario()) == (413, b'{"error":"too large"}')


def test_bytes_after_a_complete_answer_are_not_taken_for_it_and_end_the_connection():
    async def handler(request, writer):
        writer.write(answer(b"ok") + answer(b"nobody asked for this"))
        return True

    assert twice(handler) == (b"ok", b"ok", 2)


def test_an_answer_nobody_asked_for_on_an_idle_connection_is_not_taken_for_the_next():
    async def handler(request, writer):
        writer.write(answer(request.body))
        await writer.drain()
        if request.body == b"one":
            await asyncio.sleep(0.05)
            writer.write(answer(b"nobody asked for this"))  # while the connection is idle
        return True

    async def scenario():
        async with RawServer(handler) as server, pool() as transport:
            first = await (await post(transport, server.url(), b"one")).aread()
            await asyncio.sleep(0.2)
            second = await (await post(transport, server.url(), b"two")).aread()
            return first, second

    assert run(scenario()) == (b"one", b"two")


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_the_deadline_holds_across_reads_of_an_upstream_that_keeps_dripping(streamed):
    """An event every 0.1 s never trips the 5 s read timeout; the deadline
    given with the request cuts the body off all the same, once, however
    many reads came before."""
    import time

    from ccproxy.errors import ProxyError
    from ccproxy.upstream import MAX_ANSWER_BYTES

    async def handler(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(100):
            event = b'data: {"a":1}\n\n'
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.1)
        return False

    async def scenario():
        async with RawServer(handler) as server:
            client = UpstreamClient()
            started = time.monotonic()
            reply = await client.post(server.url(), b"{}", {}, None, 5, started + 1.0, "dripping")
            pieces = 0
            try:
                if streamed:
                    async for _ in reply.chunks(MAX_ANSWER_BYTES):
                        pieces += 1
                else:
                    await reply.read(MAX_ANSWER_BYTES)
            except ProxyError as error:
                return error, pieces, time.monotonic() - started
            finally:
                await reply.aclose()
                await client.aclose()
            raise AssertionError("the body ended before the deadline")

    error, pieces, took = run(scenario())
    assert (error.status, error.kind) == (504, "timeout")
    assert 0.9 < took < 1.6, f"took {took:.2f} s"
    if streamed:
        assert error.message == "the request's deadline passed mid-stream"
        assert pieces >= 5  # the events before the deadline were passed on
    else:
        assert error.message == "the upstream stopped answering"
