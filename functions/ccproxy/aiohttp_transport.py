"""httpx's transport interface over aiohttp's connection pool.

httpx stays the interface ccproxy codes against (its requests, responses,
timeouts and exceptions); aiohttp's client (C-accelerated parser, pooled
keep-alive connections, connection limits, proxies, TLS) does the HTTP/1.1
underneath. One AiohttpTransport holds one aiohttp.ClientSession and so
belongs to one event loop: UpstreamClient keeps one per loop.

What the session is set up to do, and not to do:
- no cookies (one jar would be shared by every key and client), no
  redirects, no default Accept / Accept-Encoding / User-Agent /
  Content-Type: the request goes out with the headers it was given, the
  `host` header included when given (fetch.py pins plain-http fetches to a
  checked address that way);
- no decompression: the body comes back as it was sent, and ccproxy
  inflates it under its own caps (upstream.Inflater);
- connections limited per upstream (`limit_per_host`, keyed by host, port,
  TLS settings and proxy) and in all (`limit`); a request over the limit
  waits for a connection within httpx's pool timeout;
- proxies from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and
  NO_PROXY, read once) unless a request's options name one. aiohttp's own
  `trust_env` is not used: it looks the environment up on a worker thread
  for every request and lends ~/.netrc credentials to upstream requests;
- TLS per request options: `verify` True (certifi's bundle, or
  SSL_CERT_FILE / SSL_CERT_DIR, as httpx would), False, or the path of a
  CA bundle; one SSLContext per distinct setting.

aiohttp's exceptions become httpx's in one place (`_httpx_error`), so code
that catches httpx.TimeoutException and httpx.HTTPError keeps working.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import os
import socket
import ssl
import time
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any, AsyncIterator, Coroutine, Mapping

import aiohttp
import attr
import httpx
import yarl

from .environment import Environment

log = logging.getLogger("ccproxy")

OPTIONS = "ccproxy.upstream"  # the httpx request extension that carries UpstreamOptions
LIMIT = 512  # connections open at once, all upstreams together
LIMIT_PER_HOST = 64  # connections open at once to one upstream
KEEPALIVE = 60.0  # seconds an idle connection is kept
MAX_TARGETS = 1024  # parsed URLs kept
MAX_HEAD_FIELD = 65536  # the longest status line or header an upstream may send

# Sent only when the request names them: aiohttp would add the others.
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
# Framing is aiohttp's to write, from the body it is given.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # aiohttp retries these itself
_SCHEMES = frozenset({"http", "https"})
_LARGE_BODY = aiohttp.payload.TOO_LARGE_BYTES_BODY


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    """How to reach one provider: `verify` True | False | a CA bundle's path,
    `proxy` an http(s) proxy URL (None: the environment's, if any)."""

    verify: bool | str = True
    proxy: str | None = None


DEFAULT_OPTIONS = UpstreamOptions()


def options_of(provider: Any) -> UpstreamOptions:
    """UpstreamOptions from anything with `verify` and `proxy` attributes (a
    config.Provider), or the defaults for None."""
    if provider is None:
        return DEFAULT_OPTIONS
    if isinstance(provider, UpstreamOptions):
        return provider
    verify = getattr(provider, "verify", True)
    proxy = getattr(provider, "proxy", None)
    if verify is True and proxy is None:
        return DEFAULT_OPTIONS
    return UpstreamOptions(verify, proxy)


def ssl_context(verify: bool | str = True) -> ssl.SSLContext:
    """The context for a `verify` setting: True trusts certifi's bundle, or
    SSL_CERT_FILE / SSL_CERT_DIR as they are set now (as httpx does)."""
    env = Environment.read()
    return _ssl_context(verify, env.ssl_cert_file, env.ssl_cert_dir)


@functools.lru_cache(maxsize=32)
def _ssl_context(verify: bool | str, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """One context per distinct setting, shared by every loop."""
    if verify is True:
        context = httpx.create_ssl_context()  # reads SSL_CERT_FILE / SSL_CERT_DIR itself
    elif verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        path = os.path.expanduser(verify)
        if os.path.isdir(path):
            context = ssl.create_default_context(capath=path)
        else:
            context = ssl.create_default_context(cafile=path)
    context.set_alpn_protocols(["http/1.1"])
    return context


# ---------------------------------------------------------------- proxies


def environment_proxies() -> dict[str, str]:
    """The environment's proxies (http, https, all, and no for NO_PROXY)."""
    return {scheme: value for scheme, value in urllib.request.getproxies().items() if value}


def _proxy_url(value: str) -> str | None:
    url = value if "://" in value else "http://" + value
    if url.split("://", 1)[0].lower() not in _SCHEMES:
        return None
    return url


@functools.lru_cache(maxsize=16)
def _warn_unusable_proxy(value: str) -> None:
    shown = value.rpartition("@")[2]
    log.warning(
        "the environment names the proxy %s, which ccproxy cannot use (only http:// and https:// proxies)", shown
    )


# ---------------------------------------------------------------- the transport

# Whether the connection the current request got had carried a request
# before (set by _Connector.connect, read when the exchange fails).
_reused: contextvars.ContextVar[bool] = contextvars.ContextVar("ccproxy_connection_reused", default=False)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, noting whether each connection handed out is a
    reused keep-alive one (the only kind that may be stale), and never
    handing out one that received bytes while idle: nobody asked for them,
    and they must not be taken for the next request's answer."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> aiohttp.connector.Connection:
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            reused = getattr(protocol, "_ccproxy_used", False)
            if reused and protocol is not None and protocol.should_close:
                connection.close()
                continue
            _reused.set(reused)
            if protocol is not None:
                protocol._ccproxy_used = True  # type: ignore[attr-defined]
            return connection


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp.ClientSession, created on first use
    in the running loop; requests on another loop are refused."""

    def __init__(
        self,
        limit: int = LIMIT,
        limit_per_host: int = LIMIT_PER_HOST,
        keepalive_expiry: float = KEEPALIVE,
        proxies: Mapping[str, str] | None = None,
        trust_env: bool = True,
        verify: bool | str = True,
    ) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if proxies is None:
            proxies = environment_proxies() if trust_env else {}
        self._proxies = dict(proxies)
        self._proxy_for: dict[tuple[str, str], str | None] = {}
        self._default = DEFAULT_OPTIONS if verify is True else UpstreamOptions(verify=verify)
        # By `verify`, the environment's trust as it was when the first
        # request on this transport needed it.
        self._tls: dict[bool | str, ssl.SSLContext] = {}
        # URLs parsed once: httpx's parser costs about as much as aiohttp's whole request.
        self._targets: dict[str, tuple[httpx.URL, yarl.URL]] = {}
        # aiohttp's timeouts by httpx's (connect, read, pool): a few distinct ones.
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def _open(self) -> aiohttp.ClientSession:
        session = self._session
        if session is not None:
            return session
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("this transport belongs to another event loop")
        self._loop = loop
        connector = _Connector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            keepalive_timeout=self._keepalive,
        )
        session = self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            requote_redirect_url=False,
            max_line_size=MAX_HEAD_FIELD,
            max_field_size=MAX_HEAD_FIELD,
        )
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport interface."""
        url = request.url
        raw = request.headers.raw
        try:
            headers = [(name.decode(), value.decode()) for name, value in raw if name.lower() not in _FRAMING]
        except UnicodeDecodeError:
            headers = [
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in raw if name.lower() not in _FRAMING
            ]
        try:
            data: Any = request.content or None
            replayable = True
        except httpx.RequestNotRead:  # a streamed body: sent chunked, never sent twice
            data, replayable = request.stream, False
        response = await self._exchange(
            request.method,
            url,
            yarl.URL(str(url), encoded=True),
            headers,
            data,
            replayable,
            request.extensions.get("timeout") or {},
            request.extensions.get(OPTIONS) or self._default,
            request,
        )
        response.request = request
        return response

    def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        content: bytes | None,
        timeout: Mapping[str, float | None],
        options: UpstreamOptions | None = None,
        deadline: float | None = None,
    ) -> Coroutine[Any, Any, httpx.Response]:
        """What handle_async_request does, without an httpx.Request built
        first (UpstreamClient's hot path): `headers` go out as given, the
        body's framing added; the response's `request` is built if asked
        for. `timeout` is httpx.Timeout.as_dict(). `deadline` (on
        time.monotonic()) bounds the whole exchange, the body's last byte
        included: one timer for it all, however many reads (past it,
        httpx.TimeoutException, not one of its subclasses). Await what it
        returns (the exchange itself: no coroutine in between)."""
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            parsed = httpx.URL(url)
            target = self._targets[url] = (parsed, yarl.URL(str(parsed), encoded=True))
        pending = _Pending(method, target[0], headers, content)
        return self._exchange(
            method,
            target[0],
            target[1],
            headers,
            content or None,
            True,
            timeout,
            options or self._default,
            pending,
            deadline,
        )

    async def _exchange(
        self,
        method: str,
        url: httpx.URL,
        target: yarl.URL,
        headers: list[tuple[str, str]],
        data: Any,
        replayable: bool,
        timeouts: Mapping[str, float | None],
        options: UpstreamOptions,
        request: httpx.Request | _Pending,
        deadline: float | None = None,
    ) -> httpx.Response:
        if url.scheme not in _SCHEMES:
            raise httpx.UnsupportedProtocol(f"cannot send a request over {url.scheme!r}", request=_built(request))
        connect, read, pool = timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool")
        timeout = self._timeouts.get((connect, read, pool))
        if timeout is None:
            if len(self._timeouts) >= MAX_TARGETS:
                self._timeouts.clear()
            timeout = self._timeouts[connect, read, pool] = aiohttp.ClientTimeout(
                total=None,
                # aiohttp's `connect` covers waiting for a pooled connection too.
                connect=None if connect is None or pool is None else connect + pool,
                sock_connect=connect,
                sock_read=read,
                ceil_threshold=math.inf,  # fire on time, not at the next whole second
            )
        if deadline is not None:
            # aiohttp's `total` runs until the body is read or released: the
            # deadline holds across every read of a stream with one timer.
            timeout = attr.evolve(timeout, total=max(deadline - time.monotonic(), 0.001))
        if replayable and data is not None and len(data) > _LARGE_BODY:
            with warnings.catch_warnings():
                # aiohttp's advice for bodies over 1 MiB (stream a file
                # object instead) does not apply: the bytes are in memory.
                warnings.simplefilter("ignore", ResourceWarning)
                data = aiohttp.payload.BytesPayload(data)
        tls: ssl.SSLContext | bool = True
        if url.scheme == "https":
            tls = self._tls.get(options.verify) or self._tls_for(options.verify, request)
        proxy = options.proxy or self._environment_proxy(url)
        session = self._open()
        _reused.set(False)

        def attempt() -> Any:
            return session.request(
                method, target, data=data, headers=headers, allow_redirects=False, timeout=timeout, ssl=tls, proxy=proxy
            )

        try:
            try:
                answer = await attempt()
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A keep-alive connection the upstream closed as the request
                # went out (the race every pooled client has): the request
                # is sent once more on a new connection. aiohttp does this
                # itself for idempotent methods; a POST is sent again only
                # when its body is in hand and the connection had been used
                # before, and not when the connection could not be made.
                if (
                    isinstance(exc, aiohttp.ClientConnectorError)
                    or not replayable
                    or method in _IDEMPOTENT
                    or not _reused.get()
                ):
                    raise
                answer = await attempt()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _httpx_error(exc, request, answered=False) from exc
        except ValueError as exc:  # aiohttp refuses to write the request (a header with a line break)
            raise httpx.LocalProtocolError(f"cannot send the request: {exc}", request=_built(request)) from exc
        response = Response(
            answer.status,
            headers=answer.raw_headers,
            stream=ResponseBody(answer, request),
            extensions={"http_version": _http_version(answer.version), "reason_phrase": _reason(answer.reason)},
        )
        if isinstance(request, _Pending):
            response._pending = request
        return response

    def _tls_for(self, verify: bool | str, request: httpx.Request | _Pending) -> ssl.SSLContext:
        try:
            context = self._tls[verify] = ssl_context(verify)
        except (OSError, ssl.SSLError) as exc:  # a CA bundle that cannot be read
            raise httpx.ConnectError(f"cannot use the CA bundle {verify!r}: {exc}", request=_built(request)) from None
        return context

    def _environment_proxy(self, url: httpx.URL) -> str | None:
        """The environment's proxy for `url`, or None (NO_PROXY, or none set);
        decided once per scheme and host."""
        proxies = self._proxies
        if not proxies:
            return None
        netloc = url.netloc.decode("ascii")
        key = (url.scheme, netloc)
        try:
            return self._proxy_for[key]
        except KeyError:
            pass
        value = proxies.get(url.scheme) or proxies.get("all")
        proxy = None
        if value and not urllib.request.proxy_bypass_environment(netloc, proxies):  # type: ignore[attr-defined]
            proxy = _proxy_url(value)
            if proxy is None:
                _warn_unusable_proxy(value)
        if len(self._proxy_for) >= 1024:
            self._proxy_for.clear()
        self._proxy_for[key] = proxy
        return proxy

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def abandon(self) -> None:
        """Drop the session without awaiting anything (its loop is closed,
        or its owner is gone): its connections are shut down, without
        goodbyes, and the session counts as closed."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        connector = session.connector
        session.detach()  # the session is closed; the connector is ours now
        if connector is None:
            return
        protocols = [protocol for held in connector._conns.values() for protocol, _ in held]
        protocols += list(connector._acquired)
        for protocol in protocols:
            transport = getattr(protocol, "transport", None)
            try:
                sock = transport.get_extra_info("socket") if transport is not None else None
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)  # the fd itself goes with its transport
            except Exception:  # the loop is gone: nothing here may fail the caller
                pass
        connector._close()


@functools.lru_cache(maxsize=8)
def _http_version(version: Any) -> bytes:
    return b"HTTP/%d.%d" % (version or (1, 1))


@functools.lru_cache(maxsize=64)
def _reason(reason: str | None) -> bytes:
    return (reason or "").encode("latin-1", "replace")


class _Pending:
    """What an httpx.Request would hold, built into one only when something
    asks for it (an exception, response.request)."""

    __slots__ = ("method", "url", "headers", "content")

    def __init__(self, method: str, url: httpx.URL, headers: list[tuple[str, str]], content: bytes | None) -> None:
        self.method, self.url, self.headers, self.content = method, url, headers, content

    def build(self) -> httpx.Request:
        try:
            return httpx.Request(self.method, self.url, headers=self.headers, content=self.content)
        except Exception:  # headers httpx would not take: what matters for an error is where it went
            return httpx.Request(self.method, self.url)


def _built(request: httpx.Request | _Pending) -> httpx.Request:
    return request.build() if isinstance(request, _Pending) else request


class Response(httpx.Response):
    """httpx's Response, its `request` built on first use when the exchange
    was sent without one."""

    _pending: _Pending | None = None

    @property
    def request(self) -> httpx.Request:
        if self._request is None and self._pending is not None:
            self._request = self._pending.build()
        return super().request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value

    async def aiter_raw(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """httpx's, reading aiohttp's body directly when no chunk size is
        asked for (no generator, chunker or context in between)."""
        stream = self.stream
        if chunk_size is not None or not isinstance(stream, ResponseBody):
            async for chunk in super().aiter_raw(chunk_size):
                yield chunk
            return
        if self.is_stream_consumed:
            raise httpx.StreamConsumed()
        if self.is_closed:
            raise httpx.StreamClosed()
        self.is_stream_consumed = True
        self._num_bytes_downloaded = 0
        answer = stream._response
        content = answer.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                self._num_bytes_downloaded += len(chunk)
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            stream._finished = True
            answer.close()  # httpx does not close a stream that failed
            raise _httpx_error(exc, stream._request, answered=True) from exc
        stream._finished = True
        answer.release()
        self.is_closed = True  # what aclose() would do, the connection already released


class ResponseBody(httpx.AsyncByteStream):
    """The body as it arrives: whatever has been read so far, in one piece.
    Read to its end, the connection goes back to the pool; closed before,
    it is dropped."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request | _Pending) -> None:
        self._response = response
        self._request = request
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self._finished = True
            self._response.close()  # httpx does not close a stream that failed
            raise _httpx_error(exc, self._request, answered=True) from exc
        self._finished = True
        self._response.release()

    async def aclose(self) -> None:
        if not self._finished:  # left unread: the connection cannot carry another request
            self._finished = True
            self._response.close()


def _httpx_error(exc: BaseException, pending: httpx.Request | _Pending, answered: bool) -> httpx.HTTPError:
    """The one place aiohttp's exceptions become httpx's."""
    request = _built(pending)
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(f"no connection within the connect timeout: {detail}", request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):  # SocketTimeoutError: sock_read, between two reads
        return httpx.ReadTimeout("the upstream sent nothing within the read timeout", request=request)
    if isinstance(exc, asyncio.TimeoutError):  # `total`: the exchange's deadline
        return httpx.TimeoutException("the request's deadline passed", request=request)
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        return httpx.ProxyError(f"the proxy failed: {detail}", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unresolved, TLS handshake or certificate
        return httpx.ConnectError(f"cannot connect: {detail}", request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        if answered:
            return httpx.RemoteProtocolError("the upstream closed the connection mid-answer", request=request)
        return httpx.RemoteProtocolError("the upstream closed the connection without answering", request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(f"the upstream closed the connection mid-answer: {detail}", request=request)
    if isinstance(exc, aiohttp.ClientResponseError):  # the head could not be parsed
        return httpx.RemoteProtocolError(f"malformed response from the upstream: {detail}", request=request)
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(detail, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.LocalProtocolError(f"invalid URL: {detail}", request=request)
    if isinstance(exc, (aiohttp.ClientOSError, aiohttp.ClientConnectionError, OSError)):
        return httpx.ReadError(f"the connection failed: {detail}", request=request)
    return httpx.TransportError(detail, request=request)
