"""`ccproxy keys`: fingerprints, cooldowns and today's usage, never a key."""

from __future__ import annotations

import datetime
import os
import subprocess
import time

import yaml
from ccproxy.keys import fingerprint
from ccproxy.stores.state import SqliteStateStore

from tests.support.server import CCPROXY


def test_keys_lists_fingerprints_cooldowns_and_usage(tmp_path):
    config = {
        "providers": {
            "openai": {"protocol": "openai", "base_url": "http://127.0.0.1:9/v1", "keys": ["sk-secret-one", "sk-secret-two"]},
            "gemini": {"protocol": "gemini", "base_url": "http://127.0.0.1:9/v1beta", "keys": ["env:NOT_SET_ANYWHERE"]},
            "local": {"protocol": "ollama", "base_url": "http://127.0.0.1:9"},
        },
    }
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(config))
    state = SqliteStateStore(tmp_path / "state.db")
    one, two = fingerprint("sk-secret-one"), fingerprint("sk-secret-two")
    state.cool(f"openai#{one}#gpt-4.1", time.time() + 120, "rate limited")
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    state.add_usage(f"openai#{two}", day, 3, 300, 30)
    state.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_") and k != "NOT_SET_ANYWHERE"}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    result = subprocess.run([str(CCPROXY), "keys", "--config", str(tmp_path / "ccproxy.yaml")],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()[1:]}
    assert "cooling on gpt-4.1" in lines[one] and "rate limited" in lines[one]
    assert lines[two].split()[2:] == ["ready", "3", "300", "30"]
    assert "keyless" in lines and "NOT_SET_ANYWHERE" in result.stdout
    assert "sk-secret" not in result.stdout + result.stderr
