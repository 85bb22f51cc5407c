"""The one pooled HTTP client every upstream request goes through, and the
upstream's answer as the proxy reads it (`UpstreamReply`): here, and only
here, transport failures become ProxyErrors (504 when time ran out, 502
otherwise), so the proxy above knows no HTTP library."""

from __future__ import annotations

import asyncio
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Coroutine, Iterator

import httpx

from . import __version__
from .errors import ProxyError

if TYPE_CHECKING:
    from .aiohttp_transport import AiohttpTransport

USER_AGENT = f"ccproxy/{__version__}"

__all__ = ["UpstreamClient", "UpstreamReply", "timeout"]


class UpstreamClient:
    """Sends httpx requests over aiohttp's connection pool, one session per
    event loop (Mangum may run each invocation on a new loop; connections
    cannot cross loops). aclose() closes them all.

    The transport is called directly, without an httpx.Request built first
    (the response's `request` is built if asked for): what httpx's client
    adds on top (redirects, auth flows, a cookie jar shared by every key,
    default headers) ccproxy does not want on the hot path. Proxies named
    by the environment (and NO_PROXY) are read once, here; a provider's
    own `proxy` overrides them, and its `verify` chooses the TLS trust."""

    def __init__(
        self,
        limit: int | None = None,
        limit_per_host: int | None = None,
        keepalive_expiry: float | None = None,
    ) -> None:
        self._limits = (limit, limit_per_host, keepalive_expiry)
        # Sessions by the loop they belong to. A WeakKeyDictionary would not
        # let a loop go: its own session refers to it. Sessions of closed
        # loops are dropped when another loop first sends, and by aclose().
        self._pools: dict[asyncio.AbstractEventLoop, AiohttpTransport] = {}
        # aiohttp is imported on the first request, not with the app: it is
        # a fifth of what a cold start would import.
        self._proxies: Any = None
        self._options_of: Any = None
        # Never closed (Mangum runs without a lifespan): its sessions are
        # dropped with it, or at exit, rather than complained about.
        weakref.finalize(self, _abandon, self._pools)

    def send(
        self,
        method: str,
        url: str,
        timeout: httpx.Timeout,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        provider: Any = None,
        deadline: float | None = None,
    ) -> Coroutine[Any, Any, httpx.Response]:
        """The response as soon as its head arrives; read or close it.
        `provider`: a config.Provider or UpstreamOptions (its `verify` and
        `proxy`), or None for the defaults. `deadline` (on time.monotonic())
        bounds the exchange to the body's last byte. Called within the
        running loop; await what it returns (the exchange itself: no
        coroutine between)."""
        merged = {"user-agent": USER_AGENT, **headers} if headers else {"user-agent": USER_AGENT}
        pool = self._pools.get(asyncio.get_running_loop()) or self._new_pool()
        options = self._options_of(provider)
        return pool.send(method, url, list(merged.items()), content, timeout.as_dict(), options, deadline)

    async def post(
        self,
        url: str,
        content: bytes,
        headers: dict[str, str],
        provider: Any,
        seconds: float,
        deadline: float,
        name: str,
    ) -> UpstreamReply:
        """POSTs `content` to the provider `name` (its config.Provider as
        `provider`): the reply once its head arrives, waiting at most
        `seconds` between bytes; the request's `deadline` (on
        time.monotonic()) bounds it all, the reply's body included."""
        try:
            response = await self.send("POST", url, timeout(seconds), content, headers, provider, deadline)
        except httpx.TimeoutException:
            raise ProxyError(504, f"provider {name!r} did not answer in time", kind="timeout") from None
        except httpx.HTTPError as exc:
            message = f"cannot reach provider {name!r} ({type(exc).__name__})"
            raise ProxyError(502, message, kind="unavailable") from None
        return UpstreamReply(response)

    def _new_pool(self) -> AiohttpTransport:
        from . import aiohttp_transport as transport

        loop = asyncio.get_running_loop()
        for other in [other for other in self._pools if other.is_closed()]:
            self._pools.pop(other).abandon()
        if self._proxies is None:
            self._proxies = transport.environment_proxies()
            self._options_of = transport.options_of
        limit, limit_per_host, keepalive = self._limits
        pool = self._pools[loop] = transport.AiohttpTransport(
            limit=limit or transport.LIMIT,
            limit_per_host=limit_per_host or transport.LIMIT_PER_HOST,
            keepalive_expiry=keepalive or transport.KEEPALIVE,
            proxies=self._proxies,
        )
        return pool

    async def aclose(self) -> None:
        """Closes every loop's session: this loop's with its connections'
        goodbyes, a live loop's on that loop, a closed loop's at once."""
        pools = dict(self._pools)
        self._pools.clear()
        current = asyncio.get_running_loop()
        for loop, pool in pools.items():
            if loop is current:
                await pool.aclose()
            elif not loop.is_closed() and loop.is_running():
                future = asyncio.run_coroutine_threadsafe(pool.aclose(), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(future), 5)
                except Exception:  # that loop is busy or stopping: let it go
                    pass
            else:
                pool.abandon()


def _abandon(pools: dict[asyncio.AbstractEventLoop, AiohttpTransport]) -> None:
    for pool in pools.values():
        pool.abandon()
    pools.clear()


def timeout(seconds: float) -> httpx.Timeout:
    """Connect quickly or fail over; once connected, a slow model may take
    `seconds` between bytes."""
    return httpx.Timeout(seconds, connect=min(10.0, seconds))


# ---------------------------------------------------------------- reading answers
# An upstream is an outsider too: what it sends is read under caps, checked as
# it arrives, so a compressed bomb or a line without end is an error, not an
# allocation.

MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a whole answer, decompressed
PIECE = 1024 * 1024  # the most one decompression step may produce
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


class TooLarge(ValueError):
    """An upstream answer over its cap."""


class Inflater:
    """Decompresses gzip or deflate a piece at a time, never holding more
    than `cap` bytes of output in all. Identity passes through counted."""

    def __init__(self, encoding: str, cap: int) -> None:
        encoding = encoding.strip().lower() or "identity"
        if encoding != "identity" and encoding not in _WBITS:
            raise UnsupportedEncoding(encoding)
        self.cap = cap
        self.total = 0
        self._inflater = zlib.decompressobj(wbits=_WBITS[encoding]) if encoding != "identity" else None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """What `data` decompresses to, in pieces of at most PIECE bytes: one
        small compressed chunk may stand for gigabytes."""
        if self._inflater is None:
            self._count(len(data))
            yield data
            return
        pending = data
        while pending:
            try:
                out = self._inflater.decompress(pending, PIECE)
            except zlib.error as exc:
                raise UnsupportedEncoding(f"a broken compressed body ({exc})") from None
            pending = self._inflater.unconsumed_tail
            self._count(len(out))
            if out:
                yield out

    def _count(self, size: int) -> None:
        self.total += size
        if self.total > self.cap:
            raise TooLarge(f"the answer is larger than {self.cap} bytes once decompressed")


class UnsupportedEncoding(ValueError):
    """A content-encoding ccproxy does not read (it asks for identity)."""


def inflater(response: httpx.Response, cap: int) -> Inflater:
    return Inflater(response.headers.get("content-encoding", "identity"), cap)


class UpstreamReply:
    """An upstream's answer: its status and headers at once; its body read
    whole or as it arrives, decompressed under a cap, within the deadline
    the request was sent with (UpstreamClient.send). Read it or close it."""

    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def media_type(self) -> str:
        return self._response.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def read(self, cap: int = MAX_ANSWER_BYTES) -> bytes:
        """The whole body, decompressed under its cap."""
        response = self._response
        pieces: list[bytes] = []
        try:
            body = inflater(response, cap)
            async for chunk in response.aiter_raw():
                pieces.extend(body.feed(chunk))
        except httpx.TimeoutException:
            raise ProxyError(504, "the upstream stopped answering", kind="timeout") from None
        except httpx.HTTPError as exc:
            raise ProxyError(502, f"the upstream connection failed ({type(exc).__name__})") from None
        except (TooLarge, UnsupportedEncoding) as exc:
            raise ProxyError(502, f"the upstream's answer cannot be read: {exc}") from None
        finally:
            await response.aclose()
        return b"".join(pieces)

    async def chunks(self, cap: int, observe: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives, decompressed under the cap (an upstream
        asked for identity may compress all the same), each piece shown to
        `observe`."""
        response = self._response
        try:
            body = inflater(response, cap)
            async for chunk in response.aiter_raw():
                for out in body.feed(chunk):
                    if observe is not None:
                        observe(out)
                    yield out
        except httpx.TimeoutException as exc:
            # The deadline is the bare TimeoutException; a read timeout, its subclass.
            if type(exc) is httpx.TimeoutException:
                raise ProxyError(504, "the request's deadline passed mid-stream", kind="timeout") from None
            raise ProxyError(504, "the upstream stopped sending mid-stream", kind="timeout") from None
        except httpx.HTTPError as exc:
            raise ProxyError(502, f"the upstream connection broke mid-stream ({type(exc).__name__})") from None
        except (TooLarge, UnsupportedEncoding) as exc:
            raise ProxyError(502, f"the upstream's stream cannot be read: {exc}") from None

    async def aclose(self) -> None:
        await self._response.aclose()
