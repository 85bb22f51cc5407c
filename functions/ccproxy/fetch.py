"""Fetching the images and documents a client names by URL, guarded.

ccproxy downloads these on the client's behalf (for upstreams that only take
inline data), so the URL is the client's choice and the request leaves from
ccproxy's network: unguarded, it reaches whatever ccproxy can reach (the
cloud metadata service, the Lambda runtime API, services on loopback or the
private network), and a large or endless body is read into memory whole.
Here a URL must be http(s), its host must resolve only to public addresses
(unless the config's allow list names it), every redirect is checked the
same way, and the body is counted while it is read, within a time cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import httpx

from .environment import Environment
from .errors import ProxyError
from .upstream import UpstreamClient, timeout

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MiB = 1 << 20
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
# What a response without a content-type is taken to be.
DEFAULT_MEDIA_TYPES = {"image": "image/png", "document": "application/pdf"}


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Caps and exceptions for fetches made on a client's behalf.

    `allow` names hosts ("files.internal") or addresses and networks
    ("127.0.0.1", "10.0.0.0/8") that may be fetched although not public."""

    max_bytes: int = 20 * MiB
    timeout: float = 30.0  # for the whole fetch, redirects and body included
    max_redirects: int = 3
    allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", tuple(self.allow))  # a list from YAML would not hash
        _allow_list(self.allow)  # a malformed network fails when the config loads, not on a fetch

    def allows(self, host: str, address: IPAddress | None = None) -> bool:
        hosts, networks = _allow_list(self.allow)
        if _canonical_host(host) in hosts:
            return True
        return address is not None and any(_unmapped(address) in network for network in networks)


@lru_cache(maxsize=64)
def _allow_list(allow: tuple[str, ...]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in allow:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            if "/" in entry:
                raise ValueError(f"fetch allow list: {entry!r} is not a valid network") from None
            hosts.add(_canonical_host(entry))
            continue
        # An IPv4-mapped network ("::ffff:10.0.0.0/104") means its IPv4 one:
        # addresses are unmapped before they are compared.
        mapped = isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped
        if mapped and network.prefixlen >= 96:
            network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
        networks.append(network)
    return frozenset(hosts), tuple(networks)


def _canonical_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _unmapped(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d reaches a.b.c.d, so it is judged as a.b.c.d."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden(address: str | IPAddress) -> str | None:
    """Why `address` may not be fetched by default, or None if it is public."""
    ip = _unmapped(ipaddress.ip_address(address) if isinstance(address, str) else address)
    if ip.is_unspecified:  # 0.0.0.0 and :: connect to this host
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:  # 169.254.169.254, where cloud metadata services answer
        return "a link-local address"
    if ip.is_multicast:  # Python counts multicast as global
        return "a multicast address"
    if ip.is_reserved:  # 240.0.0.0/4 and the like (Python also counts them private)
        return "a reserved address"
    if ip.is_private:  # RFC 1918, fc00::/7 and the other special-purpose blocks
        return "a private address"
    if not ip.is_global:  # e.g. 100.64.0.0/10, where Alibaba's metadata service answers
        return "an address that is not globally routable"
    return None


def _lambda_runtime_host() -> str | None:
    """The host of the Lambda runtime API (AWS_LAMBDA_RUNTIME_API, host:port):
    a GET there takes the next invocation's event, so it is never fetched.
    Read at each check, not at import, so that a change takes effect."""
    value = Environment.read().lambda_runtime_api
    if not value:
        return None
    try:
        return _canonical_host(httpx.URL("http://" + value).host)
    except httpx.InvalidURL:
        return _canonical_host(value.rpartition(":")[0] or value)


def refusal(host: str, addresses: Iterable[str | IPAddress], policy: FetchPolicy) -> str | None:
    """Why a URL whose host is `host`, resolving to `addresses`, may not be
    fetched under `policy`, or None if it may.

    Every address must pass, not just the first: the connection may go to
    any of them. The Lambda runtime API is refused even when allow-listed
    (the list is for file servers, not for ccproxy's own control plane)."""
    ips = [_unmapped(ipaddress.ip_address(a) if isinstance(a, str) else a) for a in addresses]
    runtime = _lambda_runtime_host()
    if runtime is not None and (_canonical_host(host) == runtime or any(str(ip) == runtime for ip in ips)):
        return "it is the Lambda runtime API"
    if policy.allows(host):
        return None
    for ip in ips:
        reason = forbidden(ip)
        if reason is not None and not policy.allows(host, ip):
            return f"it resolves to {reason}"
    return None


async def fetch_media(http: UpstreamClient, url: str, policy: FetchPolicy, what: str) -> tuple[bytes, str]:
    """The content at `url` and its media type (the content-type without
    parameters), or a ProxyError 400 saying why not. `what` ("image",
    "document") names the thing in error messages."""
    shown = _shown(url)
    try:
        # One deadline for everything: a per-read timeout alone lets a server
        # dripping a byte at a time hold the request open for ever.
        async with asyncio.timeout(policy.timeout):
            return await _fetch(http, url, policy, what)
    except (TimeoutError, httpx.TimeoutException):
        raise ProxyError(400, f"cannot fetch {what} {shown}: no answer within {policy.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # The type only: the message may name internal addresses.
        raise ProxyError(400, f"cannot fetch {what} {shown} ({type(exc).__name__})") from None


async def _fetch(http: UpstreamClient, url: str, policy: FetchPolicy, what: str) -> tuple[bytes, str]:
    current = _parse(url, what)
    for _ in range(policy.max_redirects + 1):
        response = await _get(http, current, policy, what)
        try:
            location = response.headers.get("location")
            if response.status_code in REDIRECTS and location:
                try:
                    current = _parse(str(current.join(location)), what)
                except httpx.InvalidURL:
                    message = f"cannot fetch {what} {_shown(url)}: it redirects to an invalid URL"
                    raise ProxyError(400, message) from None
                continue
            if response.status_code != 200:
                raise ProxyError(400, f"cannot fetch {what} {_shown(str(current))} (status {response.status_code})")
            content = await _read(response, policy, what, str(current))
        finally:
            await response.aclose()  # unread (a redirect, an error): the connection is dropped, not reused
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return content, media_type or DEFAULT_MEDIA_TYPES.get(what, "application/octet-stream")
    raise ProxyError(400, f"cannot fetch {what} {_shown(url)}: more than {policy.max_redirects} redirects")


def _parse(url: str, what: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ProxyError(400, f"{what} URL {url[:80]!r} is not a valid URL") from None
    if parsed.scheme not in DEFAULT_PORTS:
        # file:, ftp:, gopher: and the like would reach what http(s) cannot.
        raise ProxyError(400, f"{what} URL scheme {parsed.scheme[:20]!r} is not http or https")
    if not parsed.host:
        raise ProxyError(400, f"{what} URL {_shown(url)} has no host")
    return parsed


async def _get(http: UpstreamClient, url: httpx.URL, policy: FetchPolicy, what: str) -> httpx.Response:
    """The response head for `url`, sent only once its host has passed."""
    host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS wants it
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, url.port or DEFAULT_PORTS[url.scheme], type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        raise ProxyError(400, f"cannot fetch {what}: cannot resolve its URL host {url.host[:100]!r}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # in the resolver's order, once each
    if not addresses:
        raise ProxyError(400, f"cannot fetch {what}: cannot resolve its URL host {url.host[:100]!r}")
    reason = refusal(url.host, addresses, policy)
    if reason is not None:
        # Says which host and why, never the addresses: a client must not
        # learn what internal names resolve to.
        raise ProxyError(400, f"cannot fetch {what}: its URL host {url.host[:100]!r} is not allowed ({reason})")
    limits = timeout(policy.timeout)
    # identity: a compressed body would be inflated past the count in one
    # read (deflate reaches 1000:1), so only raw bytes are taken.
    headers = {"accept-encoding": "identity"}
    if url.scheme == "https":
        # DNS rebinding: the transport resolves the name again, and a name
        # with a short TTL may now point inward. For https that cannot be
        # exploited: UpstreamClient verifies the certificate against the
        # hostname (the URL's, also sent as SNI), and an internal service
        # cannot prove it is the attacker's name, so the handshake fails
        # before a request is written. Pinning the checked address would
        # need the connection's address and the certificate's name to
        # differ, which UpstreamClient does not offer. Residual risk: the
        # handshake attempt itself reaches the internal address, and whether
        # it failed at once or timed out tells a little about that port.
        # (With an HTTP proxy in the environment the proxy resolves the name;
        # the certificate check still holds end to end through CONNECT.)
        return await http.send("GET", str(url), limits, None, headers)
    # Plain http has no such check, so the request goes to the very address
    # that was checked, with the name in the Host header: a second lookup
    # never happens. The checked addresses are tried in the resolver's
    # order, as a client connecting by name would (a zone index, as in
    # fe80::1%eth0, has no place in a URL and is dropped).
    headers["host"] = url.netloc.decode("ascii")
    for address in addresses[:-1]:
        try:
            return await http.send("GET", str(url.copy_with(host=address.split("%")[0])), limits, None, headers)
        except httpx.ConnectError:
            continue
    return await http.send("GET", str(url.copy_with(host=addresses[-1].split("%")[0])), limits, None, headers)


async def _read(response: httpx.Response, policy: FetchPolicy, what: str, url: str) -> bytes:
    """The body, counted as it arrives: past the cap it stops, having held at
    most the cap and one read (about 1 MiB)."""
    too_large = ProxyError(400, f"cannot fetch {what} {_shown(url)}: it is larger than {policy.max_bytes} bytes")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Asked for identity, sent compressed anyway: refused, not inflated.
        message = f"cannot fetch {what} {_shown(url)}: it came {encoding[:20]}-encoded, though asked for unencoded"
        raise ProxyError(400, message)
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise too_large  # said up front: not a byte of it is read
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > policy.max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _shown(url: str) -> str:
    """`url` as it may appear in an error: no user:password, no query (signed
    URLs carry their credentials there), at most 200 characters."""
    try:
        parsed = httpx.URL(url)
        text = f"{parsed.scheme}://{parsed.netloc.decode('ascii')}{parsed.path}"
        if parsed.query:
            text += "?…"
    except (httpx.InvalidURL, TypeError, ValueError):
        text = url.split("?")[0].rpartition("@")[2]
    return text[:200]
