"""The proxy in front of five strict fake upstreams, all on loopback."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pytest
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.stores.secrets import NoSecrets
from ccproxy.stores.state import MemoryStateStore

from tests.fakes import UPSTREAM_MODELS, FakeUpstream
from tests.support.server import BackgroundServer

from .drivers import ACCESS_KEY, DRIVERS

PROTOCOLS = ("openai", "claude", "gemini", "ollama", "responses")
UPSTREAM_KEYS = {
    "openai": "sk-fake-openai-0123456789",
    "claude": "sk-ant-fake-0123456789",
    "gemini": "AIza-fake-0123456789",
    "ollama": None,
    "responses": "sk-fake-responses-0123456789",
}
# The path each protocol's base_url ends with (README, Config), under a
# prefix of its own so the test also shows that base URL paths are kept.
BASE_PATHS = {"openai": "/prefix/v1", "claude": "/prefix/v1", "gemini": "/prefix/v1beta", "ollama": "/prefix",
              "responses": "/prefix/v1"}


def alias(protocol: str) -> str:
    """The client-side model name that routes to the `protocol` upstream."""
    return f"via-{protocol}"


def proxy_config(fake_servers: dict[str, str]) -> dict:
    providers = {}
    for protocol in PROTOCOLS:
        provider = {"protocol": protocol, "base_url": fake_servers[protocol] + BASE_PATHS[protocol]}
        if UPSTREAM_KEYS[protocol]:
            provider["keys"] = [UPSTREAM_KEYS[protocol]]
        providers[f"up-{protocol}"] = provider
    models = {alias(p): [f"up-{p}/{UPSTREAM_MODELS[p]}"] for p in PROTOCOLS}
    return {
        "providers": providers,
        "groups": {
            "default": {"models": models},
            "second": {"models": {"only-*": [f"up-openai/{UPSTREAM_MODELS['openai']}"]}},
            "textual": {"tool_mode": "compat", "models": models},
            "native": {"tool_mode": "native", "models": models},
        },
        "active_group": "second",
        "access_keys": [ACCESS_KEY],
        # The tests serve images and documents on loopback, which a client
        # may not make the proxy fetch unless the config says so.
        "fetch": {"allow": ["127.0.0.1"]},
    }


@contextlib.contextmanager
def serving(make_config: Callable[[dict[str, str]], dict], name: str) -> Iterator[tuple[str, dict, Any]]:
    """Five strict fakes and the proxy in front of them, its config made
    from the fakes' URLs: (proxy_url, fakes by protocol, the app)."""
    fakes, servers, urls = {}, [], {}
    try:
        for protocol in PROTOCOLS:
            fake = FakeUpstream(protocol, key=UPSTREAM_KEYS[protocol])
            server = BackgroundServer(fake.app).start()
            fakes[protocol], urls[protocol] = fake, server.url
            servers.append(server)
        app = create_app(Settings(config=parse(make_config(urls), name), secrets=NoSecrets()))
        proxy = BackgroundServer(app).start()
        servers.append(proxy)
        yield proxy.url, fakes, app
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def stack():
    """The fakes and the proxy: yields (proxy_url, fakes by protocol, the app)."""
    with serving(proxy_config, "test-config") as served:
        yield served


@pytest.fixture
def proxy_url(stack):
    return stack[0]


@pytest.fixture
def upstreams(stack):
    _, fakes, app = stack
    for fake in fakes.values():
        fake.reset()
    # Each test starts with every key rested: cooldowns from an earlier
    # test's scripted failures would otherwise answer for the upstream.
    app.state.proxy.rotation.state = MemoryStateStore()
    app.state.proxy.rotation._views.clear()
    yield fakes
    for protocol, fake in fakes.items():
        assert fake.violations == [], f"the {protocol} fake rejected what the proxy sent: {fake.violations}"


@pytest.fixture
def driver_for(proxy_url):
    def make(protocol: str):
        return DRIVERS[protocol](proxy_url)

    return make
