"""An httpx transport for the upstream hot path: HTTP/1.1 on asyncio
protocols, responses parsed by httptools (llhttp, the parser uvicorn already
runs on).

httpx stays the interface (its requests, responses, timeouts and
exceptions); this replaces what sits under it by default (httpcore, h11 and
anyio, all pure Python), which cost more than half of ccproxy's added
latency per request and a fixed price per streamed chunk. Two things come
with the change: whatever body bytes have arrived are handed on together
(a loaded server converts a burst of events at once, not one read each),
and a keep-alive connection the upstream closed before answering is retried
once on a new one rather than failing the request.

Where this transport does not apply (a proxy set in the environment),
UpstreamClient keeps httpx's own.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
from typing import AsyncIterator, Callable

import httptools
import httpx

# Reading pauses while this much of a response waits for its reader.
HIGH_WATER = 1 << 20
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class State(enum.Enum):
    IDLE = "idle"  # in the pool, between requests
    REQUEST = "request"  # request written, waiting for the response head
    BODY = "body"  # head returned, body being read
    DONE = "done"  # response complete; back to the pool or closed
    CLOSED = "closed"


class _Unsolicited(Exception):
    """Raised from a parser callback to stop parsing what nobody asked for."""


class StaleConnection(Exception):
    """A reused connection ended before a byte of the answer came back: the
    upstream had closed it while idle. Safe to send the request again."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to an origin, one request at a time."""

    def __init__(self, pool: "FastTransport", origin: Origin) -> None:
        self.pool, self.origin = pool, origin
        self.state = State.REQUEST
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.idle_since = 0.0
        self.request: httpx.Request | None = None
        self._reset()
        self._waiter: asyncio.Future[bool] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.received = False
        self.error: Exception | None = None
        self._interim = False

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.state is State.IDLE or self.complete:  # nothing was asked: the connection is unusable
            self.keep_alive = False
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Unsolicited):
                raise
            self.close()
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response from the upstream: {exc}", request=self.request))
            self.close()

    def eof_received(self) -> bool:
        if self.state in (State.REQUEST, State.BODY) and not self.complete:
            if self.head_done and self._ends_at_eof():
                self.complete = True
                self._wake()
            else:
                self._fail(self._ended_early())
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        previous, self.state = self.state, State.CLOSED
        self.pool.forget(self)
        if previous in (State.REQUEST, State.BODY) and not self.complete:
            self._fail(self._ended_early())
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the answer, in the same read: not part of it
            self.keep_alive = False
            raise _Unsolicited()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer such as 100 Continue: the real one follows
            self._interim = True
            return
        self.status = status
        self.head_done = True
        # Asked now: llhttp forgets the message's framing once it is complete.
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self.headers, self.reason = [], b""
            return
        self.complete = True
        self._wake()

    # ------------------------------------------------------------ used by the transport

    async def send(self, request: httpx.Request, write_timeout: float | None) -> None:
        self._reset()
        self.state, self.request = State.REQUEST, request
        url = request.url
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        try:
            content = request.content
        except httpx.RequestNotRead:
            self._write(b"".join(head))
            await self._write_stream(request, write_timeout)
        else:
            head.append(content)
            self._write(b"".join(head))
        await self._drain(write_timeout)

    async def receive_head(self, read_timeout: float | None) -> None:
        while not self.head_done:
            if self.error is not None:
                if self.reused and not self.received:
                    raise StaleConnection()
                raise self.error
            await self.wait(read_timeout)
        self.state = State.BODY

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has more for the reader, or `timeout` seconds
        pass without a byte (httpx's read timeout)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            arrived = await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if not arrived:
            raise httpx.ReadTimeout("the upstream sent nothing within the read timeout", request=self.request)

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks, self.buffered = [], 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def finish(self) -> None:
        """The answer was read to its end: keep the connection if HTTP allows."""
        self.state = State.DONE
        if self.keep_alive and self.transport is not None and not self.transport.is_closing():
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    def usable(self, now: float, expiry: float) -> bool:
        return (
            self.state is State.IDLE
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < expiry
        )

    # ------------------------------------------------------------ internals

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise StaleConnection() if self.reused else httpx.WriteError("the connection is closed", request=self.request)
        self.transport.write(data)

    async def _write_stream(self, request: httpx.Request, write_timeout: float | None) -> None:
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        async for piece in request.stream:  # type: ignore[union-attr]
            if piece:
                self._write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await self._drain(write_timeout)
        if chunked:
            self._write(b"0\r\n\r\n")

    async def _drain(self, timeout: float | None) -> None:
        if not self._writing_paused:
            return
        self._drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError:
            self.close()
            raise httpx.WriteTimeout("the upstream did not take the request in time", request=self.request) from None
        finally:
            self._drained = None
        if self.state is State.CLOSED and not self.head_done:
            if self.reused and not self.received:
                raise StaleConnection()
            raise httpx.WriteError("the upstream closed the connection", request=self.request)
        # Closed after answering early (a 413, a 401 before the whole body):
        # the answer is read next.

    def _ends_at_eof(self) -> bool:
        """A response with neither Content-Length nor chunked framing ends
        when the connection does."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _ended_early(self) -> Exception:
        if not self.head_done:
            return httpx.RemoteProtocolError("the upstream closed the connection without answering", request=self.request)
        return httpx.RemoteProtocolError("the upstream closed the connection mid-answer", request=self.request)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class ResponseBody(httpx.AsyncByteStream):
    """The body as it arrives: everything buffered so far in one piece."""

    def __init__(self, connection: Connection, read_timeout: float | None) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                break
            elif connection.error is not None:
                raise connection.error
            else:
                await connection.wait(self._read_timeout)
        self._finished = True
        connection.finish()

    async def aclose(self) -> None:
        if not self._finished:  # left unread: the connection cannot carry another request
            self._finished = True
            self._connection.close()


class FastTransport(httpx.AsyncBaseTransport):
    """A pool of keep-alive connections per origin (scheme, host, port)."""

    def __init__(
        self,
        max_idle_per_origin: int = 64,
        keepalive_expiry: float = 60.0,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._max_idle = max_idle_per_origin
        self._expiry = keepalive_expiry
        self._make_ssl_context = ssl_context or _default_ssl_context
        self._ssl_context: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        url = request.url
        origin = (url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 80))
        connection = self._checkout(origin)
        if connection is not None:
            try:
                await self._exchange_head(connection, request, timeouts)
            except StaleConnection:
                connection.close()
                connection = None
        if connection is None:  # a fresh connection is never stale: its failures are httpx errors
            connection = await self._connect(origin, request, timeouts.get("connect"))
            await self._exchange_head(connection, request, timeouts)
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=ResponseBody(connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
        )

    async def _exchange_head(self, connection: Connection, request: httpx.Request, timeouts: dict) -> None:
        try:
            await connection.send(request, timeouts.get("write"))
            await connection.receive_head(timeouts.get("read"))
        except BaseException:
            connection.close()
            raise

    async def _connect(self, origin: Origin, request: httpx.Request, timeout: float | None) -> Connection:
        scheme, host, port = origin
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"cannot send a request over {scheme!r}", request=request)
        tls = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = self._make_ssl_context()
            tls = self._ssl_context
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self, origin), host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s", request=request) from None
        except OSError as exc:  # ssl.SSLError included
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from None
        self._open.add(connection)
        return connection

    def _checkout(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self._expiry):
                connection.reused = True
                return connection
            connection.close()
        return None

    def release(self, connection: Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self._max_idle:
            connection.close()
            return
        connection.state = State.IDLE
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def forget(self, connection: Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()


def _default_ssl_context() -> ssl.SSLContext:
    """The trust httpx would use: certifi's bundle, or SSL_CERT_FILE /
    SSL_CERT_DIR when set."""
    return httpx.create_ssl_context()
