"""The one pooled HTTP client every upstream request goes through."""

from __future__ import annotations

import asyncio
import urllib.request

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
