"""Which addresses a guarded fetch may reach (ccproxy.fetch), without a network."""

from __future__ import annotations

import asyncio

import pytest
from ccproxy.errors import ProxyError
from ccproxy.fetch import FetchPolicy, fetch_media, forbidden, refusal

DEFAULT = FetchPolicy()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "private"),  # AWS's IPv6 metadata address
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.100.100.200", "not globally routable"),  # Alibaba Cloud's metadata address
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_addresses_are_classified(address, reason):
    found = forbidden(address)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_every_resolved_address_must_pass():
    assert refusal("example.com", ["8.8.8.8"], DEFAULT) is None
    assert "loopback" in refusal("example.com", ["8.8.8.8", "127.0.0.1"], DEFAULT)
    assert "private" in refusal("example.com", ["2001:4860:4860::8888", "10.0.0.1"], DEFAULT)


@pytest.mark.parametrize(
    ("allow", "host", "addresses", "allowed"),
    [
        (("127.0.0.1",), "127.0.0.1", ["127.0.0.1"], True),
        (("127.0.0.1",), "localhost", ["127.0.0.1"], True),  # the address is listed
        (("127.0.0.1",), "localhost", ["127.0.0.1", "::1"], False),  # ::1 is not
        (("127.0.0.1",), "x", ["::ffff:127.0.0.1"], True),  # mapped forms are the same address
        (("10.0.0.0/8",), "files", ["10.20.30.40"], True),
        (("10.0.0.0/8",), "files", ["192.168.0.1"], False),
        (("::ffff:10.0.0.0/104",), "files", ["10.20.30.40"], True),
        (("fc00::/7",), "files", ["fd12::1"], True),
        (("files.internal",), "files.internal", ["10.1.1.1", "169.254.169.254"], True),
        (("Files.Internal.",), "files.internal", ["10.1.1.1"], True),  # case and a trailing dot
        (("files.internal",), "other.internal", ["10.1.1.1"], False),
    ],
)
def test_the_allow_list_overrides(allow, host, addresses, allowed):
    assert (refusal(host, addresses, FetchPolicy(allow=allow)) is None) is allowed


def test_an_allow_list_from_yaml_may_be_a_list():
    assert FetchPolicy(allow=["127.0.0.1"]).allow == ("127.0.0.1",)  # type: ignore[arg-type]


def test_a_malformed_network_is_refused_when_the_policy_is_made():
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        FetchPolicy(allow=("10.0.0.0/33",))


def test_the_lambda_runtime_api_is_refused_even_when_allowed(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    everything = FetchPolicy(allow=("127.0.0.1", "0.0.0.0/0", "localhost"))
    assert "Lambda runtime API" in refusal("localhost", ["127.0.0.1"], everything)
    assert "Lambda runtime API" in refusal("127.0.0.1", ["127.0.0.1"], everything)
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "runtime.lambda.internal:9001")
    assert "Lambda runtime API" in refusal("Runtime.Lambda.Internal", ["8.8.8.8"], everything)
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API")
    assert refusal("localhost", ["127.0.0.1"], everything) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/cat.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://127.0.0.1/cat.png",
        "http://[::1]/cat.png",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:8080/",
        "http:///no-host",
    ],
)
def test_refused_urls_never_reach_the_network(url):
    class NoNetwork:
        async def send(self, *args, **kwargs):
            raise AssertionError("a refused URL was requested")

    with pytest.raises(ProxyError) as caught:
        asyncio.run(fetch_media(NoNetwork(), url, DEFAULT, "image"))  # type: ignore[arg-type]
    assert caught.value.status == 400


def test_a_refusal_names_the_host_and_why_but_no_secret():
    with pytest.raises(ProxyError) as caught:
        url = "http://user:hunter2@127.0.0.1:8/x.png?sig=s3cret"
        asyncio.run(fetch_media(None, url, DEFAULT, "image"))  # type: ignore[arg-type]
    message = caught.value.message
    assert "'127.0.0.1'" in message and "loopback" in message
    assert "hunter2" not in message and "s3cret" not in message
