"""`ccproxy access`: add prints a new key once and writes it to the local
secrets file; the list shows names, fingerprints, scope, limits and
today's use, never a key; revoke removes it and records the revocation in
the state file, which a running `ccproxy serve` then honours."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time

import yaml
from ccproxy.access import revoked_counter, usage_entry
from ccproxy.keys import fingerprint
from ccproxy.stores.secrets import AccessKey
from ccproxy.stores.state import SqliteStateStore

from tests.support.server import CCPROXY

PLAIN = "ccp-e2e-plain-0123456789"


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    return subprocess.run([str(CCPROXY), *args, "--config", str(tmp_path / "ccproxy.yaml")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)


def test_access_add_list_revoke_round_trip(tmp_path):
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump({"providers": {}}))
    (tmp_path / "secrets.json").write_text(json.dumps({"providers": {"openai": ["sk-e2e-0123456789"]},
                                                       "access_keys": [PLAIN]}))
    added = run(["access", "add", "laptop", "--groups", "default", "--models", "claude-*", "gpt-*",
                 "--rpm", "60", "--tokens-per-day", "2000000", "--expires", "2099-06-30"], tmp_path)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("ccp-") and key not in added.stderr
    document = json.loads((tmp_path / "secrets.json").read_text())
    assert document["providers"] == {"openai": ["sk-e2e-0123456789"]}
    assert document["access_keys"] == [PLAIN, {"name": "laptop", "key": key, "groups": ["default"],
                                               "models": ["claude-*", "gpt-*"], "rpm": 60,
                                               "tokens_per_day": 2000000, "expires": "2099-06-30"}]
    assert oct((tmp_path / "secrets.json").stat().st_mode & 0o777) == "0o600"
    again = run(["access", "add", "laptop"], tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr

    state = SqliteStateStore(tmp_path / "state.db")
    day = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    state.add_usage(usage_entry("laptop", "claude-x"), day, 3, 100, 20)
    state.add_usage(usage_entry("laptop", "gpt-x"), day, 1, 5, 5)
    state.close()
    listed = run(["access"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["laptop"] == ["laptop", fingerprint(key), "default", "claude-*,gpt-*", "60", "2000000", "4", "130",
                              "2099-06-30"]
    assert rows[fingerprint(PLAIN)][1:] == [fingerprint(PLAIN), "*", "*", "-", "-", "0", "0", "never"]

    revoked = run(["access", "revoke", "laptop"], tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads((tmp_path / "secrets.json").read_text())["access_keys"] == [PLAIN]
    state = SqliteStateStore(tmp_path / "state.db")
    assert state.read_amount(revoked_counter(AccessKey("laptop", key)), 0.0) == 1
    state.close()
    missing = run(["access", "revoke", "laptop"], tmp_path)
    assert missing.returncode == 1
    for result in (added, again, listed, revoked, missing):
        assert PLAIN not in result.stdout + result.stderr and "sk-e2e" not in result.stdout + result.stderr
    assert key not in listed.stdout + listed.stderr + revoked.stdout + revoked.stderr


def test_a_key_revoked_with_the_cli_is_refused_by_every_serving_process(tmp_path):
    """Two `ccproxy serve` processes share the secrets file and the state
    file, as a machine's workers do; `ccproxy access revoke` in a third
    process, and neither serves the key any more."""
    import httpx

    from tests.fakes import UPSTREAM_MODELS, FakeUpstream
    from tests.support.server import BackgroundServer, start_ccproxy

    fake = FakeUpstream("openai", key="sk-e2e-0123456789")
    upstream = BackgroundServer(fake.app).start()
    config = {
        "providers": {"up": {"protocol": "openai", "base_url": upstream.url + "/v1"}},
        "groups": {"default": {"models": {"*": [f"up/{UPSTREAM_MODELS['openai']}"]}}},
    }
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "secrets.json").write_text(json.dumps({"providers": {"up": ["sk-e2e-0123456789"]},
                                                       "access_keys": [PLAIN]}))
    added = run(["access", "add", "teammate"], tmp_path)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    servers = [start_ccproxy(tmp_path / "ccproxy.yaml", env, tmp_path, "--quiet") for _ in range(2)]
    try:
        def ask(url: str) -> int:
            body = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}
            return httpx.post(url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"},
                              timeout=30).status_code

        assert [ask(url) for _, url in servers] == [200, 200]
        revoked = run(["access", "revoke", "teammate"], tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        # Within a minute everywhere: poll, as a client retrying would.
        deadline = time.monotonic() + 60
        statuses = [ask(url) for _, url in servers]
        while statuses != [401, 401] and time.monotonic() < deadline:
            time.sleep(0.5)
            statuses = [ask(url) for _, url in servers]
        assert statuses == [401, 401]
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=10)
        upstream.stop()
    assert fake.violations == []
