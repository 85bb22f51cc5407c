"""The load client: httpx (async, keep-alive), N closed-loop clients.

httpx's requests go over ccproxy's upstream transport (aiohttp's pool)
rather than httpx's default stack: the client shares a core with the fake upstream, and the default
stack's cost per streamed chunk made the client, not the servers, the
bottleneck of the 32-client direct runs (so a proxy that passed on fewer,
larger chunks measured faster than no proxy at all). The same client calls
the upstream directly, ccproxy and LiteLLM.

Each request's time to first byte (of the body) and to last byte is kept;
a request counts as failed unless it answers 200 and its body carries the
expected marker (the end of the stream, or the answer's text).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Result:
    ttfb: list[float] = field(default_factory=list)  # seconds
    ttlb: list[float] = field(default_factory=list)
    failures: int = 0
    first_failure: str = ""
    wall: float = 0.0  # seconds for the whole batch
    requests: int = 0

    def median_ttfb(self) -> float:
        return statistics.median(self.ttfb) if self.ttfb else float("nan")

    def median_ttlb(self) -> float:
        return statistics.median(self.ttlb) if self.ttlb else float("nan")


@dataclass(frozen=True)
class Job:
    url: str
    body: bytes
    headers: dict[str, str]
    markers: tuple[bytes, ...]  # must all appear in the last bytes of a good answer


def client(concurrency: int) -> httpx.AsyncClient:
    from ccproxy.aiohttp_transport import AiohttpTransport

    transport = AiohttpTransport(limit_per_host=concurrency, keepalive_expiry=120)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(120.0))


async def _one(http: httpx.AsyncClient, job: Job, result: Result) -> None:
    start = time.perf_counter()
    first = 0.0
    tail = b""
    try:
        async with http.stream("POST", job.url, content=job.body, headers=job.headers) as response:
            async for chunk in response.aiter_raw():
                if not first and chunk:
                    first = time.perf_counter()
                tail = (tail + chunk)[-4096:]
            end = time.perf_counter()
            status = response.status_code
    except httpx.HTTPError as exc:
        result.failures += 1
        result.first_failure = result.first_failure or f"{type(exc).__name__}: {exc}"
        return
    if status != 200 or not all(marker in tail for marker in job.markers):
        result.failures += 1
        result.first_failure = result.first_failure or f"status {status}: {tail[-300:]!r}"
        return
    result.ttfb.append((first or end) - start)
    result.ttlb.append(end - start)


class Clients:
    """One httpx.AsyncClient per simulated client, each keeping its own
    connection alive."""

    def __init__(self, concurrency: int) -> None:
        self.http = [client(1) for _ in range(concurrency)]

    async def __aenter__(self) -> "Clients":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(http.aclose() for http in self.http))


async def connect(clients: Clients, url: str) -> None:
    """Open every client's keep-alive connection with a cheap GET."""
    await asyncio.gather(*(http.get(url) for http in clients.http))


async def run(clients: Clients, job: Job, total: int) -> Result:
    """`total` requests from all the clients, each sending its next request
    as soon as its last one is answered."""
    result = Result(requests=total)
    remaining = total

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(http, job, result)

    start = time.perf_counter()
    await asyncio.gather(*(worker(http) for http in clients.http))
    result.wall = time.perf_counter() - start
    return result


async def run_for(clients: Clients, job: Job, seconds: float) -> Result:
    """Closed-loop clients for a fixed time (the memory test)."""
    result = Result()
    deadline = time.perf_counter() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            result.requests += 1
            await _one(http, job, result)

    start = time.perf_counter()
    await asyncio.gather(*(worker(http) for http in clients.http))
    result.wall = time.perf_counter() - start
    return result
