"""The guarded fetch (ccproxy.fetch) against real servers on loopback: the
address guard, redirects, the size cap enforced while reading, the time cap,
and where the connection really goes."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import trustme
from ccproxy.errors import ProxyError
from ccproxy.fetch import FetchPolicy, fetch_media
from ccproxy.upstream import UpstreamClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.server import serving

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2b5a8a90000000049454e44ae426082"
)
LOOPBACK = FetchPolicy(allow=("127.0.0.1",))
CHUNK = b"x" * 65536


class Served:
    """What the server did, seen from the test's thread."""

    def __init__(self) -> None:
        self.produced = 0  # bytes the endless body has generated
        self.stopping = threading.Event()


async def _nap(served: Served, seconds: float) -> None:
    """Sleep, but end at once when the server is stopping (its shutdown
    waits for every handler)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not served.stopping.is_set():
        await asyncio.sleep(0.02)


def _app(served: Served) -> Starlette:
    async def cat(request: Request) -> Response:
        return Response(PNG, headers={"content-type": "image/png; charset=binary"})

    async def untyped(request: Request) -> Response:
        return Response(PNG)

    async def host(request: Request) -> Response:
        return PlainTextResponse(request.headers["host"])

    async def redirect(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=int(request.query_params.get("status", 302)))

    async def hops(request: Request) -> Response:
        left = int(request.path_params["left"])
        return Response(PNG, media_type="image/png") if left == 0 else RedirectResponse(f"/hops/{left - 1}")

    async def missing(request: Request) -> Response:
        return Response(b"no such cat", status_code=404)

    async def endless(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            # Until the reader hangs up (uvicorn drops what is sent after that
            # without a word, so the generator has to ask).
            while not served.stopping.is_set() and not await request.is_disconnected():
                served.produced += len(CHUNK)
                yield CHUNK

        return StreamingResponse(body(), media_type="image/png")

    async def sized(request: Request) -> Response:
        size = int(request.path_params["size"])

        async def body() -> AsyncIterator[bytes]:  # streamed: no content-length to go by
            for start in range(0, size, 100):
                yield b"x" * min(100, size - start)

        return StreamingResponse(body(), media_type="image/png")

    async def declared(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"x"
            await _nap(served, 30)

        return StreamingResponse(body(), media_type="image/png", headers={"content-length": str(100 * 1024 * 1024)})

    async def slow_head(request: Request) -> Response:
        await _nap(served, 30)
        return Response(PNG, media_type="image/png")

    async def drip(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(1000):  # a byte every 20 ms: never a read timeout, never an end
                if served.stopping.is_set():
                    return
                yield b"x"
                await asyncio.sleep(0.02)

        return StreamingResponse(body(), media_type="image/png")

    async def gzipped(request: Request) -> Response:
        return Response(gzip.compress(b"x" * 100_000), media_type="image/png", headers={"content-encoding": "gzip"})

    return Starlette(routes=[
        Route("/cat.png", cat), Route("/untyped", untyped), Route("/host", host), Route("/redirect", redirect),
        Route("/hops/{left}", hops), Route("/missing.png", missing), Route("/endless", endless),
        Route("/sized/{size}", sized), Route("/declared", declared), Route("/slow-head", slow_head),
        Route("/drip", drip), Route("/gzipped", gzipped),
    ])


@pytest.fixture(scope="module")
def server():
    served = Served()
    with serving(_app(served)) as background:
        background.served = served
        yield background
        served.stopping.set()


class CountingClient(UpstreamClient):
    """UpstreamClient that counts the body bytes handed to its reader."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.urls: list[str] = []

    async def send(self, method, url, timeout, content=None, headers=None) -> httpx.Response:
        self.urls.append(url)
        response = await super().send(method, url, timeout, content, headers)
        inner, client = response.stream, self

        class Counted(httpx.AsyncByteStream):
            async def __aiter__(self):
                async for chunk in inner:  # type: ignore[union-attr]
                    client.received += len(chunk)
                    yield chunk

            async def aclose(self) -> None:
                await inner.aclose()  # type: ignore[union-attr]

        response.stream = Counted()
        return response


def fetch(url: str, policy: FetchPolicy = LOOPBACK, what: str = "image", http: UpstreamClient | None = None):
    """fetch_media on a fresh loop and client: (content, media type)."""

    async def run():
        client = http or UpstreamClient()
        try:
            return await fetch_media(client, url, policy, what)
        finally:
            await client.aclose()

    return asyncio.run(run())


def refused(url: str, policy: FetchPolicy = LOOPBACK, http: UpstreamClient | None = None) -> str:
    with pytest.raises(ProxyError) as caught:
        fetch(url, policy, http=http)
    assert caught.value.status == 400
    return caught.value.message


# ------------------------------------------------------------ the address guard


def test_loopback_is_refused_by_default(server):
    http = CountingClient()
    message = refused(server.url + "/cat.png", FetchPolicy(), http)
    assert "'127.0.0.1'" in message and "loopback" in message
    assert http.urls == [], "a refused host was connected to"


def test_loopback_is_fetched_when_allowed(server):
    assert fetch(server.url + "/cat.png") == (PNG, "image/png")
    assert fetch(server.url + "/untyped", what="document") == (PNG, "application/pdf")  # no type: the default


def test_localhost_is_refused_unless_its_addresses_or_name_are_allowed(server):
    url = f"http://localhost:{server.port}/cat.png"
    assert "loopback" in refused(url, FetchPolicy())
    assert fetch(url, FetchPolicy(allow=("localhost",)))[0] == PNG


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/cat.png", "file:///etc/passwd", "file://127.0.0.1/etc/passwd"])
def test_other_schemes_are_refused(url):
    assert "is not http or https" in refused(url, FetchPolicy(allow=("127.0.0.1", "0.0.0.0/0")))


def test_http_connects_to_the_checked_address(server, monkeypatch):
    """DNS rebinding: the name is resolved once, and the request goes to the
    address that was checked (a second lookup could answer differently)."""
    lookups: list[str] = []

    async def run() -> tuple[bytes, str]:
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def resolver(host, port, *args, **kwargs):
            lookups.append(host)
            if host == "pinned.test":  # no real resolver knows it: only the checked address can be reached
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
            return await real(host, port, *args, **kwargs)

        monkeypatch.setattr(loop, "getaddrinfo", resolver)
        http = UpstreamClient()
        try:
            return await fetch_media(http, f"http://pinned.test:{server.port}/host", LOOPBACK, "image")
        finally:
            await http.aclose()

    content, _ = asyncio.run(run())
    assert content == f"pinned.test:{server.port}".encode()  # the name still went in the Host header
    assert lookups == ["pinned.test"]


def test_https_keeps_checking_the_certificate_against_the_hostname(monkeypatch, tmp_path):
    """For https the name stays in the URL: SNI and the certificate check are
    on it, so a name rebound to an internal address fails the handshake."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(tls)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: %d\r\n\r\n" % len(PNG)
            writer.write(head + PNG)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def run() -> tuple[tuple[bytes, str], ProxyError]:
        tls_server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
        port = tls_server.sockets[0].getsockname()[1]
        http = UpstreamClient()
        try:
            by_name = FetchPolicy(allow=("localhost",))
            good = await fetch_media(http, f"https://localhost:{port}/cat.png", by_name, "image")
            try:  # the same server, by an address its certificate does not name
                await fetch_media(http, f"https://127.0.0.1:{port}/cat.png", LOOPBACK, "image")
            except ProxyError as exc:
                return good, exc
            raise AssertionError("a certificate for another name was accepted")
        finally:
            await http.aclose()
            tls_server.close()

    good, bad = asyncio.run(run())
    assert good == (PNG, "image/png")
    assert bad.status == 400 and "ConnectError" in bad.message


# ------------------------------------------------------------ redirects


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://[::1]:{port}/cat.png", "loopback"),  # loopback, but not the allowed address
        ("file:///etc/passwd", "is not http or https"),
    ],
)
def test_a_redirect_to_a_forbidden_host_is_refused(server, target, why):
    http = CountingClient()
    target = target.format(port=server.port)
    message = refused(str(httpx.URL(server.url + "/redirect", params={"to": target})), http=http)
    assert why in message
    assert len(http.urls) == 1, "the forbidden target was requested"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_between_allowed_hosts_are_followed(server, status):
    target = f"http://localhost:{server.port}/cat.png"
    url = str(httpx.URL(server.url + "/redirect", params={"to": target, "status": status}))
    assert fetch(url) == (PNG, "image/png")


def test_redirects_are_capped(server):
    assert fetch(server.url + "/hops/3")[0] == PNG  # relative locations, three of them
    assert "more than 3 redirects" in refused(server.url + "/hops/4")
    none = FetchPolicy(max_redirects=0, allow=("127.0.0.1",))
    assert "more than 0 redirects" in refused(server.url + "/hops/1", none)


def test_a_failed_fetch_names_the_status(server):
    message = refused(server.url + "/missing.png?token=s3cret")
    assert message == f"cannot fetch image {server.url}/missing.png?… (status 404)"


# ------------------------------------------------------------ the size cap


def test_an_endless_body_is_cut_off_at_the_cap(server):
    cap = 1024 * 1024
    http = CountingClient()
    message = refused(server.url + "/endless", FetchPolicy(max_bytes=cap, allow=("127.0.0.1",)), http)
    assert f"larger than {cap} bytes" in message
    # Stopped within a read of the cap (one read of the transport is about 1 MiB at most).
    assert cap < http.received <= cap + 2 * 1024 * 1024
    assert server.served.produced < 64 * 1024 * 1024
    # The connection was dropped, not left open: the server notices and stops.
    settled, deadline = -1, time.monotonic() + 5
    while server.served.produced != settled and time.monotonic() < deadline:
        settled = server.served.produced
        time.sleep(0.2)
    assert server.served.produced == settled, "the endless body is still being sent"


def test_a_streamed_body_may_reach_the_cap_but_not_pass_it(server):
    policy = FetchPolicy(max_bytes=1000, allow=("127.0.0.1",))
    assert fetch(server.url + "/sized/1000", policy)[0] == b"x" * 1000
    assert "larger than 1000 bytes" in refused(server.url + "/sized/1001", policy)


def test_a_declared_length_over_the_cap_is_refused_before_reading(server):
    http = CountingClient()
    started = time.monotonic()
    policy = FetchPolicy(max_bytes=1024 * 1024, timeout=10, allow=("127.0.0.1",))
    message = refused(server.url + "/declared", policy, http)
    assert "larger than 1048576 bytes" in message
    assert http.received == 0
    assert time.monotonic() - started < 5  # not a read that waited for the rest


def test_a_compressed_body_is_refused_rather_than_inflated(server):
    assert "gzip-encoded" in refused(server.url + "/gzipped")


# ------------------------------------------------------------ the time cap


@pytest.mark.parametrize("path", ["/slow-head", "/drip"])
def test_a_slow_server_hits_the_time_cap(server, path):
    """/drip sends a byte every 20 ms: a per-read timeout never fires, the
    fetch's own deadline does."""
    started = time.monotonic()
    message = refused(server.url + path, FetchPolicy(timeout=0.5, allow=("127.0.0.1",)))
    assert "no answer within 0.5 s" in message
    assert time.monotonic() - started < 3
