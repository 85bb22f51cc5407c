"""The one pooled HTTP client every upstream request goes through."""

from __future__ import annotations

import asyncio

import httpx

_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=60)


class UpstreamClient:
    """An httpx.AsyncClient per event loop (Mangum may run each invocation on
    a new loop; connections cannot cross loops), reused for every request."""

    def __init__(self) -> None:
        self._clients: dict[int, httpx.AsyncClient] = {}

    def get(self) -> httpx.AsyncClient:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(limits=_LIMITS, timeout=None, follow_redirects=False)
            self._clients = {loop_id: client}
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def timeout(seconds: float) -> httpx.Timeout:
    """Connect quickly or fail over; once connected, a slow model may take
    `seconds` between bytes."""
    return httpx.Timeout(seconds, connect=min(10.0, seconds))
