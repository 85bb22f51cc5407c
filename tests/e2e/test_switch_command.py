"""`ccproxy switch`: two `ccproxy serve` processes share one SQLite state
file, as a machine's workers do; the command, in a third process, moves
what both serve under /switch within seconds, and a restarted server keeps
the switched group."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ccproxy.config import parse
from ccproxy.live import LiveConfig
from ccproxy.stores.state import SqliteStateStore

from tests.fakes import FakeUpstream
from tests.support.server import CCPROXY, BackgroundServer, start_ccproxy
from tests.support.switching import serving_group, switch_config, wait_for_group

ACCESS_KEY = "ccp-e2e-switch-0123456789"
UPSTREAM_KEY = "sk-e2e-switch-0123456789"


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    return env


def switch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CCPROXY), "switch", *args, "--config", str(tmp_path / "ccproxy.yaml")],
                          env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=30)






@pytest.fixture
def servers(tmp_path) -> Iterator[list[tuple[subprocess.Popen, str]]]:
    """Two `ccproxy serve` on one state file, in front of a fake OpenAI;
    the list may be changed (a restarted server) and is stopped whole."""
    fake = FakeUpstream("openai", key=UPSTREAM_KEY)
    upstream = BackgroundServer(fake.app).start()
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(switch_config(upstream.url, ACCESS_KEY, UPSTREAM_KEY)))
    running = [start_ccproxy(tmp_path / "ccproxy.yaml", environment(tmp_path), tmp_path, "--quiet") for _ in range(2)]
    try:
        yield running
    finally:
        for process, _ in running:
            process.terminate()
            process.wait(timeout=10)
        upstream.stop()
    assert fake.violations == []


def test_every_server_follows_ccproxy_switch_and_keeps_it_across_a_restart(tmp_path, servers):
    urls = [url for _, url in servers]
    assert [serving_group(url, ACCESS_KEY) for url in urls] == ["first", "first"]
    shown = switch([], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("active group: first (the config's active_group") and "none switched to" in shown.stdout

    switched = switch(["second"], tmp_path)
    assert switched.returncode == 0, switched.stderr
    assert switched.stdout.strip() == "active group: second (was first); every server follows within a few seconds"
    assert wait_for_group(urls, "second", ACCESS_KEY) == ["second", "second"]
    shown = switch([], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("active group: second (switched to, in the state file ")
    assert str(tmp_path / "state.db") in shown.stdout

    # A restarted server starts on the switched group, from its first request.
    process, _ = servers[0]
    process.terminate()
    process.wait(timeout=10)
    servers[0] = start_ccproxy(tmp_path / "ccproxy.yaml", environment(tmp_path), tmp_path, "--quiet")
    urls = [url for _, url in servers]
    assert serving_group(urls[0], ACCESS_KEY) == "second"

    unknown = switch(["third"], tmp_path)
    assert unknown.returncode == 2
    assert "no group 'third'" in unknown.stderr and "first, second" in unknown.stderr
    assert serving_group(urls[0], ACCESS_KEY) == serving_group(urls[1], ACCESS_KEY) == "second"

    reset = switch(["--reset"], tmp_path)
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.startswith("active group: first, the config's active_group (was second)")
    assert wait_for_group(urls, "first", ACCESS_KEY) == ["first", "first"]
    shown = switch([], tmp_path)
    assert "none switched to" in shown.stdout
    for result in (shown, switched, unknown, reset):
        assert ACCESS_KEY not in result.stdout + result.stderr and UPSTREAM_KEY not in result.stdout + result.stderr


def test_a_config_that_does_not_load_is_refused(tmp_path):
    (tmp_path / "ccproxy.yaml").write_text("providers: [not, a, mapping]\n")
    refused = switch(["second"], tmp_path)
    assert refused.returncode == 2
    assert "ccproxy.yaml" in refused.stderr and refused.stdout == ""
    assert not (tmp_path / "state.db").exists()  # nothing written, not even a state file


def test_a_switched_group_the_config_dropped_is_named_and_the_configs_group_serves(tmp_path):
    """Switched to `second`, then the config loses it: `ccproxy switch` says
    so, and the served /switch falls back to the config's active_group."""
    config = tmp_path / "ccproxy.yaml"
    config.write_text(yaml.safe_dump({"groups": {"first": {"models": {}}, "second": {"models": {}}},
                                      "active_group": "first"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    switched = subprocess.run([str(CCPROXY), "switch", "second", "--config", str(config)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=30)
    assert switched.returncode == 0, switched.stderr
    config.write_text(yaml.safe_dump({"groups": {"first": {"models": {}}}, "active_group": "first"}))
    shown = subprocess.run([str(CCPROXY), "switch", "--config", str(config)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=30)
    assert "active group: second" in shown.stdout
    assert "'second' is no group of" in shown.stderr and "/switch serves first" in shown.stderr
    served = parse(yaml.safe_load(config.read_text()), "test")
    state = SqliteStateStore(tmp_path / "state.db")
    try:
        assert asyncio.run(LiveConfig(served).active_group(state, served)) == "first"
    finally:
        state.close()
