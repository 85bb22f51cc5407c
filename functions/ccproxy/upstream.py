"""The one pooled HTTP client every upstream request goes through."""

from __future__ import annotations

import asyncio
import urllib.request
import zlib
from typing import Iterator

import httpx

from . import __version__
from .transport import FastTransport

USER_AGENT = f"ccproxy/{__version__}"
MAX_CACHED_URLS = 1024


class UpstreamClient:
    """Sends httpx requests over one connection pool per event loop (Mangum
    may run each invocation on a new loop; connections cannot cross loops).

    The pool is ccproxy's FastTransport, called directly: what httpx's
    client adds on top (redirects, auth flows, a cookie jar shared by every
    key, default headers) ccproxy does not want on the hot path. When the
    environment names an HTTP proxy, requests go through an httpx client
    instead, which honours it (and NO_PROXY)."""

    def __init__(self) -> None:
        self._pools: dict[int, FastTransport | httpx.AsyncClient] = {}
        # Parsed once: httpx's URL parser is about half the cost of a Request.
        self._urls: dict[str, httpx.URL] = {}
        self._proxied = any(scheme in urllib.request.getproxies() for scheme in ("http", "https", "all"))

    async def send(
        self,
        method: str,
        url: str,
        timeout: httpx.Timeout,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The response as soon as its head arrives; read or close it."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= MAX_CACHED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        request = httpx.Request(
            method, parsed, content=content, headers={"user-agent": USER_AGENT, **(headers or {})},
            extensions={"timeout": timeout.as_dict()},
        )
        pool = self._pool()
        if isinstance(pool, httpx.AsyncClient):
            return await pool.send(request, stream=True)
        response = await pool.handle_async_request(request)
        response.request = request
        return response

    def _pool(self) -> FastTransport | httpx.AsyncClient:
        loop_id = id(asyncio.get_running_loop())
        pool = self._pools.get(loop_id)
        if pool is None:
            if self._proxied:
                limits = httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=60)
                pool = httpx.AsyncClient(timeout=None, follow_redirects=False, trust_env=True, limits=limits)
            else:
                pool = FastTransport()
            self._pools = {loop_id: pool}
        return pool

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


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
